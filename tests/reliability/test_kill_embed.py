"""kill -9 of `histoflow embed` at several points, then a rerun: the outputs of an
uninterrupted run, nothing half-written, no process left behind (issue 15)."""

from __future__ import annotations

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

SETTINGS = ["--mpp", "0.972"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return two_slides(tmp_path_factory.mktemp("embed"))


def _cmd(inputs, out: Path) -> list[str]:
    return slides_cmd("embed", inputs, out, SETTINGS)


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
