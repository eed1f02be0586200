"""A study whose tiling runs on Spark (local[2]) gives the tiles the local engine gives, and
draws its test slides' heatmaps on Spark too."""

from __future__ import annotations

import json
import os
import sys

import pyarrow.parquet as pq
import pytest

from histoflow.config.tiling import TileConfig
from histoflow.tiling import extract_tiles
from tests.helpers import build_pcam_cohort
from tests.workflows.test_study import _actions, _run, _study

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_study_tiles_on_spark_like_the_local_engine(tmp_path):
    pytest.importorskip("pyspark")
    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    cohort = build_pcam_cohort(tmp_path / "cohort", n_train=4, n_val=2, n_test=2, grid=8)
    settings = {"tile_px": 96, "mpp": 0.972, "tissue_threshold": 0.2}
    path = _study(
        tmp_path,
        cohort,
        tiling={"engine": "spark", "spark_master": "local[2]", "settings": settings},
        mil={"enabled": False},
        evaluation={"n_boot": 20, "heatmaps": "test"},
    )
    record = _run(path, tmp_path / "out")
    assert _actions(record)["tiles"] == "ran" and record["tiles"]["failed"] == []
    summary = json.loads((tmp_path / "out" / "heatmaps" / "summary.json").read_text())
    assert summary["device"] == "spark local[2]" and summary["complete"] == 2 and not summary["failed"]
    local = tmp_path / "local"
    extract_tiles(sorted((cohort / "slides").glob("*.tif")), local, TileConfig(**settings), workers=1, progress=False)
    assert pq.read_table(tmp_path / "out" / "tiles" / "manifest.parquet").equals(
        pq.read_table(local / "manifest.parquet")
    )
