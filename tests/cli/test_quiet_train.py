"""What `histoflow train` prints, in a real process (Lightning's handlers write to the process's
stderr, which CliRunner does not see): with -q nothing at all on success; without it a short
summary, and never Lightning's device banner, its "fit stopped" line or its advertising tips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import need_data

NOISE = (
    "GPU available",
    "TPU available",
    "HPU available",
    "LOCAL_RANK",
    "💡 Tip",
    "litmodels",
    "log_every_n_steps",
    "limit_train_batches",
    "Loading `train_dataloader`",
    "`Trainer.fit` stopped",
)
ROOT = Path(__file__).resolve().parents[2]


def _train(out: Path, *flags: str) -> subprocess.CompletedProcess:
    # the default recipe (its one-cycle schedule is what makes Lightning count the batches) on 54
    # small BreakHis images: one epoch of one step, no limit_train_batches
    sets = [
        f"data.path={need_data('breakhis')}",
        "data.image_px=32",
        "data.num_workers=0",
        "data.verify=false",
        "train.epochs=1",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "histoflow.cli", *flags, "train", "pcam_simple_cnn", "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


def test_quiet_train_prints_nothing_and_a_plain_one_no_lightning_noise(tmp_path):
    quiet = _train(tmp_path / "q", "-q")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == "", quiet.stdout + quiet.stderr
    plain = _train(tmp_path / "p")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    printed = plain.stdout + plain.stderr
    for noise in NOISE:
        assert noise not in printed, (noise, printed)
    assert "val: n 12" in plain.stdout and "run folder:" in plain.stdout, printed
