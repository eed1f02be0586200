"""Normal vs atypical cross-validation: folds grouped by slide, test once, the recipe file."""

from __future__ import annotations

import numpy as np
import pytest

from histoflow.config import load_config
from histoflow.config.mitosis import AtypiaCVConfig
from histoflow.data.amibr import read_amibr
from histoflow.workflows.mitosis_atypia import default_run_config, fold_manifests, slide_bootstrap
from tests.conftest import REPO, need_data


def test_folds_hold_out_every_crop_once_and_never_split_a_slide():
    manifest = read_amibr(need_data("ami_br")).atypia_manifest()
    folds = fold_manifests(manifest, AtypiaCVConfig(folds=5))
    tested = np.zeros(len(manifest), int)
    for fold in folds:
        frame = fold.frame
        tested += (frame["split"] == "test").to_numpy()
        assert set(frame["split"]) == {"train", "val", "test"}
        slides = {s: set(frame.loc[frame["split"] == s, "slide"]) for s in ("train", "val", "test")}
        assert not (slides["train"] & slides["val"]) and not (slides["train"] & slides["test"])
        assert not (slides["val"] & slides["test"])
        assert set(frame.loc[frame["split"] == "val", "label"]) == {"normal", "atypical"}
    assert (tested == 1).all()


def test_slide_bootstrap_resamples_whole_slides():
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 50)
    p = np.clip(y * 0.3 + rng.random(100) * 0.7, 0, 1)
    slides = np.repeat(np.arange(20), 5)
    ci = slide_bootstrap(y, p, (p >= 0.5).astype(int), slides, n_boot=200, seed=0)
    assert (
        ci["slides"] == 20 and ci["auc"][0] < ci["auc"][1] and ci["balanced_accuracy"][0] < ci["balanced_accuracy"][1]
    )


def test_the_recipe_file_is_the_built_in_default():
    from_file = load_config(REPO / "configs" / "mitosis" / "atypia_cnn.yaml").model_dump()
    built_in = default_run_config().model_dump()
    assert from_file == built_in, "configs/mitosis/atypia_cnn.yaml and default_run_config() differ"


@pytest.mark.slow
def test_two_fold_cv_end_to_end(tmp_path):
    from histoflow.workflows.mitosis_atypia import atypia_cv

    need_data("ami_br")
    run = tmp_path / "tiny.yaml"
    run.write_text(
        "data: {image_px: 32, mpp: 0.25, num_workers: 0, max_per_split: 40, positive_class: atypical}\n"
        "model: {params: {widths: [8, 16], depth: 1}}\ntrain: {epochs: 1, batch_size: 16}\n"
    )
    summary = atypia_cv(AtypiaCVConfig(folds=2, run=str(run), n_boot=50), tmp_path / "cv", quiet=True)
    assert summary["folds"] == 2 and 0 <= summary["pooled"]["auc"] <= 1
    assert (tmp_path / "cv" / "oof.csv").is_file() and (tmp_path / "cv" / "fold1" / "metrics.json").is_file()


def test_the_window_classifier_recipe_is_a_valid_run_config():
    cfg = load_config(REPO / "configs" / "mitosis" / "window_cnn.yaml")
    assert cfg.data.positive_class == "mitosis" and cfg.data.mpp == 0.25 and cfg.augment.hed_jitter is not None
