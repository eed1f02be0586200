"""kill -9 of `histoflow train` at several points, then `--resume`: the same outputs as an
uninterrupted run, no file that looks complete but is not, no process left behind (issue 15)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from histoflow.checkpoint import Checkpoint
from histoflow.core.io import is_temporary
from tests.conftest import need_data
from tests.reliability.common import TINY, same_weights, weights, without_timing

pytestmark = pytest.mark.slow

EXTRA = [
    "train.epochs=3",
    "data.max_per_split=160",
    "augment.dihedral=true",
    "augment.where=batch",
    "data.num_workers=2",
]


def _cmd(out: Path, resume: bool = False) -> list[str]:
    base = [sys.executable, "-m", "histoflow.cli", "--quiet", "train", "--out", str(out)]
    if resume:
        return [*base, "--resume"]
    return [*base, "--set", f"data.path={need_data('pcam')}", *sum((["--set", o] for o in TINY + EXTRA), [])]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _check_readable(run: Path) -> None:
    """Every file that looks complete is complete (atomic writes: a killed one stays a .tmp)."""
    for path in run.rglob("*"):
        if not path.is_file() or is_temporary(path) or "tb" in path.parts:
            continue
        if path.suffix == ".pt":
            Checkpoint.read(path)
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


WHEN = {
    "during_epoch_1": lambda out: (out / "checkpoints" / "resume.ckpt").exists(),
    "between_epochs": lambda out: (out / "history.csv").exists(),
    "during_evaluation": lambda out: (out / "checkpoints" / "training_done.json").exists(),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "whole"
    result = subprocess.run(_cmd(out), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("when", list(WHEN))
def test_kill_then_resume_gives_the_uninterrupted_outputs(tmp_path, reference, when):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not WHEN[when](out):
        assert proc.poll() is None and time.time() < deadline, f"the run ended before {when}"
        time.sleep(0.02)
    children = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: its children must not outlive it
    proc.wait()
    deadline = time.time() + 15
    while any(_alive(c) for c in children) and time.time() < deadline:
        time.sleep(0.2)
    assert not [c for c in children if _alive(c)], "orphan processes after kill -9"
    assert not (out / "metrics.json").exists()
    _check_readable(out)

    result = subprocess.run(_cmd(out, resume=True), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_readable(out)
    for name in ("best.pt", "last.pt"):
        assert same_weights(weights(reference, name), weights(out, name)), name
    a, b = (pd.read_csv(r / "history.csv").drop(columns="seconds") for r in (reference, out))
    pd.testing.assert_frame_equal(a, b)
    assert (out / "predictions_val.csv").read_bytes() == (reference / "predictions_val.csv").read_bytes()
    metrics = [without_timing(json.loads((r / "metrics.json").read_text())) for r in (reference, out)]
    metrics[0].pop("checkpoint"), metrics[1].pop("checkpoint")
    assert metrics[0] == metrics[1]
    assert not list((out / "checkpoints").glob("*.ckpt"))  # training finished: no resume checkpoint left
