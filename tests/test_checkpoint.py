"""Checkpoint: one object answers what a checkpoint file holds; nobody parses its dictionary."""

from __future__ import annotations

import pytest
import torch

from histoflow.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from histoflow.config import ModelConfig
from histoflow.core.errors import CheckpointError
from histoflow.models.factory import create_model

MODEL_CONFIG = {"name": "simple_cnn", "params": {"widths": [4, 8], "depth": 1}}


def _save(path, **extra):
    torch.manual_seed(0)
    model = create_model(ModelConfig.model_validate(MODEL_CONFIG), 2, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2])
    return save_checkpoint(
        path,
        model,
        model_config=MODEL_CONFIG,
        class_names=["normal", "tumour"],
        image_px=32,
        run_config={"seed": 7, "data": {"crop_px": 24}},
        preprocess={"stain_norm": "none"},
        extra=extra,
    ), model


def test_attributes_answer_what_the_file_holds(tmp_path):
    path, model = _save(tmp_path / "m.pt", epoch=3)
    ckpt = Checkpoint.read(path)
    assert ckpt.class_names == ["normal", "tumour"] and ckpt.num_classes == 2
    assert ckpt.image_px == 32 and ckpt.tile_px == 32 and ckpt.mpp is None  # patches of unknown resolution
    assert ckpt.mean == pytest.approx([0.5, 0.4, 0.3]) and ckpt.std == pytest.approx([0.2, 0.2, 0.2])
    assert ckpt.seed == 7 and ckpt.data_config == {"crop_px": 24} and ckpt.epoch == 3
    assert ckpt.preprocess == {"stain_norm": "none"} and ckpt.temperature is None
    assert "state_dict" not in ckpt.metadata() and ckpt.metadata()["path"] == str(path)
    rebuilt = ckpt.model()
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))


def test_slide_resolution_is_recorded_when_trained_on_tiles(tmp_path):
    path, _ = _save(tmp_path / "m.pt", mpp=0.5, tile_px=256)
    ckpt = Checkpoint.read(path)
    assert ckpt.mpp == 0.5 and ckpt.tile_px == 256 and ckpt.image_px == 32


def test_fingerprint_follows_the_bytes(tmp_path):
    a, _ = _save(tmp_path / "a.pt")
    b, _ = _save(tmp_path / "b.pt", epoch=1)
    fa = Checkpoint.read(a).fingerprint
    assert fa == Checkpoint.read(a).fingerprint and len(fa) == 16
    assert fa != Checkpoint.read(b).fingerprint


def test_temperature_is_stored_atomically_and_applied(tmp_path):
    path, _ = _save(tmp_path / "m.pt")
    calibrated = Checkpoint.read(path).with_temperature(2.0, fitted_on="val")
    assert calibrated.temperature == 2.0 and Checkpoint.read(path).temperature == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        raw = calibrated.model(apply_temperature=False)(x)
        assert torch.allclose(calibrated.model()(x), raw / 2.0, atol=1e-5)
    with pytest.raises(CheckpointError, match="temperature must be a positive finite number"):
        calibrated.with_temperature(float("inf"))


def test_missing_and_foreign_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: checkpoint not found"):
        Checkpoint.read(tmp_path / "nope.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match=r"bare\.pt: not a histoflow checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")
