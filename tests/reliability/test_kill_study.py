"""kill -9 of `histoflow study` while its tile classifier trains, then the same command again:
the study finishes with the results of an uninterrupted one (training resumes exactly on a CPU),
the finished tiling is not redone, and nothing half-written is left (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import build_pcam_cohort
from tests.reliability.kill import assert_no_orphans, assert_whole, cli, first, kill_when, run
from tests.workflows.test_study import TINY_TILE_MODEL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    cohort = build_pcam_cohort(root / "cohort", n_train=4, n_val=2, n_test=2, grid=8)
    path = root / "study.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "killed",
                "slides": str(cohort / "slides"),
                "labels": str(cohort / "labels.csv"),
                "tiling": {"workers": 1, "settings": {"tile_px": 96, "mpp": 0.972, "tissue_threshold": 0.2}},
                # three epochs: the kill lands after the first, with training left to resume
                "tile_model": {"set": [*TINY_TILE_MODEL, "train.epochs=3"]},
                "mil": {"train": {"epochs": 3}},
                "evaluation": {"n_boot": 50, "top_k": 3},
            }
        )
    )
    return path


def _evaluation(out: Path) -> dict:
    return json.loads((out / "evaluation" / "metrics.json").read_text())


def test_a_killed_study_resumes_to_the_uninterrupted_result(study, tmp_path):
    whole = tmp_path / "whole"
    run(cli("study", str(study), "--out", str(whole)))
    killed = tmp_path / "killed"
    # history.csv gets its first row when epoch 0 ends: the kill falls inside training
    pids = kill_when(cli("study", str(study), "--out", str(killed)), first("history.csv", killed / "tile_model"))
    assert_no_orphans(pids)
    assert_whole(killed)
    assert json.loads((killed / "tiles" / "stage.json").read_text())["status"] == "complete"
    assert json.loads((killed / "tile_model" / "stage.json").read_text())["status"] == "running"
    run(cli("study", str(study), "--out", str(killed)))
    stages = {s["stage"]: s["action"] for s in json.loads((killed / "study.json").read_text())["stages"]}
    assert stages["tiles"] == "skipped" and stages["tile_model"] == "resumed"
    assert _evaluation(killed)["slides"] == _evaluation(whole)["slides"]
