"""A patch run records the resolution its images were taken at (`data.mpp`), so predict-slide and
embed need no --mpp for it (issue 20: `--set data.mpp=0.972` was an unknown key)."""

from __future__ import annotations

import pytest

from histoflow.checkpoint import Checkpoint
from histoflow.train.fit import fit
from tests.helpers import tiny_config


def test_data_mpp_is_recorded_with_the_source_patch_size(tmp_path):
    run = fit(tiny_config("data.mpp=0.972", "train.epochs=1"), tmp_path / "run", quiet=True)
    ckpt = Checkpoint.read(run / "checkpoints" / "best.pt")
    # PCam patches are 96 px at 0.972 um/px; the model sees them resized to 32 px (TINY_RUN)
    assert ckpt.mpp == pytest.approx(0.972) and ckpt.tile_px == 96 and ckpt.image_px == 32


def test_without_data_mpp_a_patch_checkpoint_stores_no_resolution(tmp_path):
    run = fit(tiny_config("train.epochs=1"), tmp_path / "run", quiet=True)
    assert Checkpoint.read(run / "checkpoints" / "best.pt").mpp is None
