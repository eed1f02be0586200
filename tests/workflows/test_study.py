"""`histoflow study` on a small cohort of real PCam tissue: every stage, the skip/redo rules, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from histoflow.config.base import load_model_config
from histoflow.config.study import StudyConfig
from histoflow.core.errors import ConfigError, DataError
from histoflow.workflows.study.run import resolve_paths, run_study
from tests.helpers import build_pcam_cohort

TINY_TILE_MODEL = [
    "data.num_workers=0",
    "model.params={widths: [8, 16], depth: 1}",
    "train.epochs=1",
    "train.batch_size=32",
    "normalize.kind=imagenet",
    "data.tiles_per_slide=24",
]


def _study(folder: Path, cohort: Path, **changes) -> Path:
    study = {
        "name": "tiny",
        "slides": str(cohort / "slides"),
        "labels": str(cohort / "labels.csv"),
        "tiling": {"workers": 1, "settings": {"tile_px": 96, "mpp": 0.972, "tissue_threshold": 0.2}},
        "tile_model": {"set": TINY_TILE_MODEL},
        "mil": {"train": {"epochs": 3}},
        "evaluation": {"n_boot": 50, "top_k": 3},
    }
    for key, value in changes.items():
        study[key] = value
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _run(path: Path, out: Path, overrides: list[str] | None = None) -> dict:
    cfg = resolve_paths(load_model_config(StudyConfig, path, overrides), path.parent)
    return run_study(cfg, out, quiet=True)


def _actions(record: dict) -> dict[str, str]:
    return {s["stage"]: s["action"] for s in record["stages"]}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return build_pcam_cohort(tmp_path_factory.mktemp("cohort") / "c", n_train=4, n_val=2, n_test=2, grid=8)


@pytest.fixture(scope="module")
def first_run(cohort, tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    path = _study(folder, cohort)
    return path, folder / "out", _run(path, folder / "out")


def test_a_study_runs_every_stage_and_compares_both_arms_on_the_test_slides(first_run, cohort):
    path, out, record = first_run
    assert set(_actions(record).values()) == {"ran"}
    assert list(_actions(record)) == ["tiles", "tile_model", "heatmaps", "embeddings", "mil", "evaluation"]
    assert record["task"] == "binary" and record["classes"] == ["0", "1"]
    test_slides = set(pd.read_csv(cohort / "labels.csv").query("split == 'test'")["slide"])
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    test = metrics["slides"]["test"]
    assert {r["slide"] for r in test["slides"]} == test_slides  # the cohort's own held-out slides
    assert {"mean", "max", "topk_mean", "fraction", "mil"} <= set(test["aggregations"])
    arms = metrics["comparison"]["arms"]
    assert [a["arm"].split(" ")[0] for a in arms] == ["tiles", "attention"]
    assert all(a["split"] == "test" and a["metric"] == "slide ROC AUC" for a in arms)
    # MIL trained on the same split the tile classifier used
    mil_split = pd.read_csv(out / "mil" / "predictions.csv").set_index("id")["split"]
    assert set(mil_split[mil_split == "test"].index) == test_slides
    assert {p.parent.name for p in (out / "heatmaps").glob("*/heatmap.png")} == test_slides
    from histoflow.checkpoint import Checkpoint

    ckpt = Checkpoint.read(out / "tile_model" / "checkpoints" / "best.pt")
    assert ckpt.mpp == pytest.approx(0.972) and ckpt.tile_px == 96
    html = (out / "report.html").read_text()
    assert "attention MIL" in html and "Slide level: test" in html and "data:image/png;base64" in html


def test_a_second_run_skips_every_stage_and_a_changed_setting_redoes_only_its_dependants(first_run):
    path, out, record = first_run
    again = _run(path, out)
    assert set(_actions(again).values()) == {"skipped"}
    assert again["evaluation"] == record["evaluation"]
    changed = _run(path, out, ["mil.train.epochs=2"])
    assert _actions(changed) == {
        "tiles": "skipped",
        "tile_model": "skipped",
        "heatmaps": "skipped",
        "embeddings": "skipped",
        "mil": "redone",
        "evaluation": "redone",
    }
    assert yaml.safe_load((out / "mil" / "config.yaml").read_text())["train"]["epochs"] == 2


def test_tiles_from_another_resampling_redo_the_tile_stage(first_run, monkeypatch):
    """The tile stage's settings carry tiling.read.PIXELS_VERSION: a study tiled by a histoflow
    that resampled differently is retiled (and every later stage redone), not reused."""
    from histoflow.workflows.study import run as study_run
    from histoflow.workflows.study.stages import fingerprint

    path = first_run[0]
    cfg = resolve_paths(load_model_config(StudyConfig, path, None), path.parent)
    before = fingerprint(study_run._tiling_settings(cfg))
    monkeypatch.setattr(study_run, "PIXELS_VERSION", -1)
    assert fingerprint(study_run._tiling_settings(cfg)) != before


def test_an_interrupted_stage_resumes_with_its_own_resume(first_run):
    path, out, _ = first_run
    marker = out / "mil" / "stage.json"
    state = json.loads(marker.read_text())
    marker.write_text(json.dumps({**state, "status": "running"}))  # as a kill during MIL training leaves it
    record = _run(path, out, ["mil.train.epochs=2"])
    assert _actions(record)["mil"] == "resumed" and _actions(record)["evaluation"] == "skipped"


def test_a_folder_that_is_not_a_study_is_refused(cohort, tmp_path):
    path = _study(tmp_path, cohort)
    (tmp_path / "out" / "tiles").mkdir(parents=True)
    (tmp_path / "out" / "tiles" / "mine.txt").write_text("user data")
    with pytest.raises(ConfigError, match="not a study stage folder"):
        _run(path, tmp_path / "out")
    assert (tmp_path / "out" / "tiles" / "mine.txt").read_text() == "user data"


def test_slides_without_a_label_are_left_out_and_said(cohort, tmp_path):
    labels = pd.read_csv(cohort / "labels.csv")
    dropped = labels[labels["split"] == "train"]["slide"].iloc[0]
    partial = tmp_path / "partial.csv"
    labels[labels["slide"] != dropped].to_csv(partial, index=False)
    path = _study(tmp_path, cohort, labels=str(partial), mil={"enabled": False})
    record = _run(path, tmp_path / "out")
    assert any("no label" in n and dropped in n for n in record["notes"]), record["notes"]
    assert "mil" not in _actions(record)
    assert dropped in (tmp_path / "out" / "report.html").read_text()


def test_bad_labels_are_refused_before_any_work(cohort, tmp_path):
    one_class = tmp_path / "one.csv"
    one_class.write_text("slide,label\npcam-train-001,1\npcam-train-002,1\n")
    path = _study(tmp_path, cohort, labels=str(one_class))
    with pytest.raises(DataError, match="1 class"):
        _run(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    unknown = tmp_path / "unknown.csv"
    labels = pd.read_csv(cohort / "labels.csv")
    pd.concat(
        [labels, pd.DataFrame([{"slide": "never-scanned", "label": 1, "patient": "x", "split": "train"}])]
    ).to_csv(unknown, index=False)
    path = _study(tmp_path, cohort, labels=str(unknown))
    with pytest.raises(DataError, match="never tiled.*never-scanned"):
        _run(path, tmp_path / "out2")
