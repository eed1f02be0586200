"""kill -9 of `histoflow embed` at several points, then a rerun: the outputs of an
uninterrupted run, nothing half-written, no process left behind (issue 15)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import need_data
from tests.predict.test_slide import _tiny_checkpoint
from tests.reliability.kill import assert_no_orphans, assert_whole, cli, first, kill_when, run

pytestmark = pytest.mark.slow

SLIDES = ("a", "b")
SETTINGS = ["--mpp", "0.972"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    for name in SLIDES:  # two slides: a kill between them leaves one complete, one not started
        shutil.copy(need_data("wsi", "cmu-1-small-region.svs"), root / f"{name}.svs")
    return root, _tiny_checkpoint(root / "m.pt")


def _cmd(inputs, out: Path) -> list[str]:
    root, ckpt = inputs
    slides = [str(root / f"{n}.svs") for n in SLIDES]
    return cli("embed", *slides, "--checkpoint", str(ckpt), "--out", str(out), *SETTINGS)


def _outputs(out: Path) -> dict:
    found = {}
    for sid in SLIDES:
        d = out / sid
        found[sid] = {
            "tiles": pq.read_table(d / "tiles.parquet").to_pydict(),
            "embeddings": np.load(d / "embeddings.npy").tobytes(),
        }
    return found


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "o"
    run(_cmd(inputs, out))
    return _outputs(out)


WHEN = {
    "first_output": lambda out: first("*.*", out),  # slide a being written
    "first_slide": lambda out: first("embed.json", out),  # slide a complete, b not
}


@pytest.mark.parametrize("when", list(WHEN))
def test_kill_then_rerun_gives_the_uninterrupted_outputs(tmp_path, inputs, reference, when):
    out = tmp_path / "o"
    started = kill_when(_cmd(inputs, out), WHEN[when](out))
    assert_no_orphans(started)
    assert_whole(out)
    assert not (out / "b" / "embed.json").exists(), "the run ended before the kill: nothing was tested"
    run(_cmd(inputs, out))
    assert_whole(out)
    assert _outputs(out) == reference
