"""`histoflow train` on tile shards (data.tiles + data.labels), on real slides built from PCam
patches and tiled once per module: what the run records (mpp, tile size), its predictions, a
slide prediction that needs no --mpp, the slide-level checks, preflight, and exact --resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from histoflow.checkpoint import Checkpoint
from histoflow.cli import app
from histoflow.cli.common import state
from histoflow.config import load_config
from histoflow.core.errors import ConfigError, DataError
from histoflow.data.samplers import SlideEpochSampler
from histoflow.tiling.read import PIXELS_VERSION
from histoflow.train.data import build_run_data, train_sampler
from histoflow.train.preflight import check_run_config
from tests.helpers import COHORT_MPP, COHORT_TILE_PX, TINY_CLI_RUN, sets, tiled_pcam_cohort

runner = CliRunner()
# TINY_CLI_RUN without data.image_px: the tiles' size is the default to check
TINY = [o for o in TINY_CLI_RUN if not o.startswith("data.image_px")]


def _invoke(*args):
    try:
        return runner.invoke(app, ["--quiet", *map(str, args)])
    finally:
        state.quiet = state.debug = False


@pytest.fixture(scope="module")
def tiled(tmp_path_factory) -> tuple[Path, Path]:
    return tiled_pcam_cohort(tmp_path_factory.mktemp("tile-train"))


def _tile_sets(tiled, labels: Path | None = None) -> list[str]:
    cohort, tiles = tiled
    return [f"data.tiles={tiles}", f"data.labels={labels or cohort / 'labels.csv'}"]


@pytest.fixture(scope="module")
def tile_run(tiled, tmp_path_factory) -> Path:
    """One epoch of two steps on the tiles, 8 tiles per slide drawn per epoch, classes balanced."""
    out = tmp_path_factory.mktemp("tile-run") / "run"
    overrides = [*_tile_sets(tiled), "data.tiles_per_slide=8", "data.balance.sampler=true", *TINY]
    result = _invoke("train", "--out", out, *sets(*overrides))
    assert result.exit_code == 0, result.output
    return out


def test_run_records_the_tiles_resolution(tile_run):
    data = yaml.safe_load((tile_run / "config.yaml").read_text())["data"]
    assert data["mpp"] == COHORT_MPP and data["image_px"] == COHORT_TILE_PX and data["tiles_per_slide"] == 8
    ckpt = Checkpoint.read(tile_run / "checkpoints" / "best.pt")
    assert (ckpt.mpp, ckpt.tile_px, ckpt.image_px) == (COHORT_MPP, COHORT_TILE_PX, COHORT_TILE_PX)
    assert ckpt.pixels_version == PIXELS_VERSION  # predict-slide warns when it reads tiles otherwise
    assert ckpt.class_names == ["0", "1"]


def test_run_evaluates_the_labelled_splits_per_tile(tiled, tile_run):
    cohort, _ = tiled
    splits = pd.read_csv(tile_run / "splits.csv", dtype={"label": str})
    labels = pd.read_csv(cohort / "labels.csv", dtype=str)
    assert splits.groupby("slide")["split"].first().to_dict() == dict(zip(labels["slide"], labels["split"]))
    metrics = json.loads((tile_run / "metrics.json").read_text())
    for name in ("val", "test"):
        rows = splits[splits["split"] == name]
        assert metrics[name]["n"] == len(rows) > 0
        pred = pd.read_csv(tile_run / f"predictions_{name}.csv", dtype={"label": str})
        assert {"tile_id", "x", "y", "size_px0", "slide", "patient", "p_0", "p_1"} <= set(pred.columns)
        key = ["tile_id", "slide", "x", "y", "label"]
        pd.testing.assert_frame_equal(
            pred[key].sort_values("tile_id").reset_index(drop=True),
            rows[key].sort_values("tile_id").reset_index(drop=True),
        )
        assert pred["tile_id"].is_unique and (pred["size_px0"] == COHORT_TILE_PX).all()


def test_predict_slide_needs_no_mpp(tiled, tile_run, tmp_path):
    cohort, _ = tiled
    slide = cohort / "slides" / "pcam-test-002.tif"
    result = _invoke("predict-slide", slide, "--checkpoint", tile_run / "checkpoints" / "best.pt", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "pcam-test-002" / "slide.json").read_text())
    assert report["status"] == "complete"
    assert (report["mpp"], report["tile_px"]) == (COHORT_MPP, COHORT_TILE_PX)
    assert report["grid"]["region_px0"] == COHORT_TILE_PX  # the slide is at 0.972 um/px: level-0 tiles of 96 px
    assert report["tiles"]["scored"] > 10 and 0 <= report["score"] <= 1


def test_train_data_uses_the_slide_sampler_and_keeps_a_given_image_px(tiled):
    cfg = load_config(None, [*_tile_sets(tiled), "data.tiles_per_slide=3", "data.image_px=64", *TINY])
    data = build_run_data(cfg)
    assert data.resolved == {"mpp": COHORT_MPP}  # image_px was given: not the tiles' size
    assert data.train.image_px == 64 and data.train[0][0].shape == (3, 64, 64)
    sampler = train_sampler(cfg, data)
    assert isinstance(sampler, SlideEpochSampler)
    slides = data.manifest.split("train").frame["slide"]
    assert len(sampler) == 3 * slides.nunique() and set(slides.iloc[list(sampler)]) == set(slides)
    plain = load_config(None, [*_tile_sets(tiled), *TINY])
    assert train_sampler(plain, build_run_data(plain)) is None  # no cap, no balance: a plain shuffle


def test_one_class_among_training_slides_is_refused_in_slides(tiled, tmp_path):
    cohort, _ = tiled
    labels = pd.read_csv(cohort / "labels.csv", dtype=str)
    labels.loc[labels["split"] == "train", "label"] = "0"
    labels.to_csv(tmp_path / "one.csv", index=False)
    result = _invoke("train", "--out", tmp_path / "run", *sets(*_tile_sets(tiled, tmp_path / "one.csv"), *TINY))
    assert result.exit_code == 2, result.output
    text = result.output[result.output.index("error:") :]
    assert "training slides hold one class only ('0': 6 slide(s))" in text and "one.csv" in text
    assert not (tmp_path / "run").exists()


def test_a_given_mpp_other_than_the_tiles_is_refused(tiled):
    cfg = load_config(None, [*_tile_sets(tiled), "data.mpp=0.5", *TINY])
    with pytest.raises(DataError, match=r"data.mpp is 0.5 but the tiles .* are at 0.972"):
        build_run_data(cfg)


def test_preflight_lists_every_tile_source_problem(tiled, tmp_path):
    cohort, tiles = tiled
    not_tiles = tmp_path / "not-tiles"
    not_tiles.mkdir()
    cases = {
        # labels or a cap without tiles
        (f"data.path={tiles}", f"data.labels={cohort / 'labels.csv'}", "data.tiles_per_slide=4"): [
            "data.labels: only for whole-slide data",
            "data.tiles_per_slide: only for whole-slide data",
        ],
        # a folder that is no tiling output, and no labels
        (f"data.tiles={not_tiles}",): [
            f"data.tiles: {not_tiles} is not a `histoflow tile` output (no manifest.parquet)",
            "data.labels: tiles need a label CSV",
        ],
        # two sources of images, and a label CSV that is not there
        (f"data.path={tiles}", f"data.tiles={tiles}", f"data.labels={tmp_path / 'gone.csv'}"): [
            "data.path and data.tiles: give one source of images",
            f"data.labels: {tmp_path / 'gone.csv'} does not exist",
        ],
    }
    for overrides, problems in cases.items():
        with pytest.raises(ConfigError) as err:
            check_run_config(load_config(None, [*overrides, *TINY]))
        for problem in problems:
            assert problem in str(err.value), (overrides, str(err.value))
    check_run_config(load_config(None, [*_tile_sets(tiled), *TINY]))  # the good one passes


def test_kill_mid_epoch_then_resume_on_tiles_equals_the_uninterrupted_run(tiled, tmp_path):
    """The slide sampler's generator is saved with the epoch-start checkpoint: the resumed run
    draws the same tiles and ends with the same weights."""
    from histoflow.train.fit import fit
    from tests.reliability.common import same_weights, weights
    from tests.reliability.test_resume import _killed_then_resumed

    cfg = load_config(
        None,
        [
            *_tile_sets(tiled),
            "data.tiles_per_slide=6",
            "data.balance.sampler=true",
            "data.image_px=32",
            "model.dropout=0.2",
            *TINY,
            "train.epochs=3",
            "train.max_steps_per_epoch=null",
        ],
    )
    whole = fit(cfg, tmp_path / "whole")
    resumed = _killed_then_resumed(cfg, tmp_path / "resumed", epoch=1, batch=2)
    assert same_weights(weights(whole), weights(resumed))
    a, b = (pd.read_csv(r / "history.csv").drop(columns="seconds") for r in (whole, resumed))
    pd.testing.assert_frame_equal(a, b)
