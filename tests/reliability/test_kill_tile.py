"""kill -9 of `histoflow tile` (process pool and threads), then a rerun: the outputs of an
uninterrupted run, no shard that looks complete but is not, no process left behind (issue 15)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import need_data
from tests.reliability.kill import assert_no_orphans, assert_whole, cli, first, kill_when, run, tiles_of

pytestmark = pytest.mark.slow

# small tiles in small shards: enough shards that a kill lands mid-run
OPTIONS = ["--tile-px", "64", "--tiles-per-shard", "8", "--processes", "2"]
ENGINES = {"pool": ["--pool-min-tiles", "0"], "threads": []}


def _tile(out, engine: str) -> list[str]:
    return cli("tile", str(need_data("wsi", "cmu-1-small-region.svs")), "--out", str(out), *OPTIONS, *ENGINES[engine])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("tile") / "whole"
    run(_tile(out, "threads"))
    return tiles_of(out)


def _shards(out, n: int):
    return lambda: len(list((out / "shards").rglob("part-*.parquet"))) >= n


WHEN = {
    "mask": lambda out: first("mask.png", out / "slides"),  # planned, no shard yet
    "first_shard": lambda out: _shards(out, 1),
    "sixth_shard": lambda out: _shards(out, 6),
}


@pytest.mark.parametrize(
    ("engine", "when"),
    [("pool", "first_shard"), ("pool", "sixth_shard"), ("threads", "mask"), ("threads", "sixth_shard")],
)
def test_kill_then_rerun_gives_the_uninterrupted_tiles(tmp_path, reference, engine, when):
    out = tmp_path / "run"
    started = kill_when(_tile(out, engine), WHEN[when](out))
    if engine == "pool":
        assert started, "the pool never started: the test would not test it"
    assert_no_orphans(started)
    before = sorted(p.name for p in out.rglob("part-*.parquet"))
    assert_whole(out)  # every shard that exists reads: none is truncated
    assert sorted(p.name for p in out.rglob("part-*.parquet")) == before  # nobody writes on after the kill
    assert not (out / "manifest.parquet").exists(), "the run ended before the kill: nothing was tested"

    run(_tile(out, engine))
    assert_whole(out)
    assert tiles_of(out) == reference  # same tile ids, same image bytes
    report = json.loads((out / "slides" / "cmu-1-small-region" / "report.json").read_text())
    assert report["status"] == "complete"
