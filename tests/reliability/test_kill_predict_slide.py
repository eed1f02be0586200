"""kill -9 of `histoflow predict-slide` at several points, then a rerun: the outputs of an
uninterrupted run, nothing half-written, no process left behind (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.reliability.kill import (
    SLIDES,
    assert_no_orphans,
    assert_whole,
    first,
    kill_when,
    run,
    slides_cmd,
    two_slides,
)

pytestmark = pytest.mark.slow

SETTINGS = ["--mpp", "0.972", "--reader-threads", "2", "--aggregate", "max"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return two_slides(tmp_path_factory.mktemp("predict-slide"))


def _cmd(inputs, out: Path) -> list[str]:
    return slides_cmd("predict-slide", inputs, out, SETTINGS)


def _outputs(out: Path) -> dict:
    found = {}
    for sid in SLIDES:
        d = out / sid
        rep = json.loads((d / "slide.json").read_text())
        found[sid] = {
            "score": rep["score"],
            "scores": rep["scores"],
            "tiles": pq.read_table(d / "tiles.parquet").to_pydict(),
            "grid": np.load(d / "probabilities.npy").tobytes(),
            "regions": (d / "regions.geojson").read_bytes(),
        }
    return found


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "o"
    run(_cmd(inputs, out))
    return _outputs(out)


WHEN = {
    "first_tiles": lambda out: first("tiles.parquet", out),  # slide a half written
    "first_slide": lambda out: first("slide.json", out),  # slide a complete, b not
    "second_slide": lambda out: first("tiles.parquet", out / "b"),
}


@pytest.mark.parametrize("when", list(WHEN))
def test_kill_then_rerun_gives_the_uninterrupted_outputs(tmp_path, inputs, reference, when):
    out = tmp_path / "o"
    started = kill_when(_cmd(inputs, out), WHEN[when](out))
    assert_no_orphans(started)
    assert_whole(out)
    assert not (out / "summary.json").exists(), "the run ended before the kill: nothing was tested"
    run(_cmd(inputs, out))
    assert_whole(out)
    assert _outputs(out) == reference
