"""Calibration: ECE, reliability, temperature scaling fitted, stored in the checkpoint and applied."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histoflow.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from histoflow.core.errors import CheckpointError, DataError
from histoflow.evaluate.calibration import (
    apply_temperature,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from histoflow.models.factory import create_model


def _overconfident(n=4000, true_t=3.0, seed=0):
    """Labels drawn from sigmoid(z); the model reports sigmoid(true_t * z): too sure of itself."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    p = 1 / (1 + np.exp(-true_t * z))
    return y, np.stack([1 - p, p], 1)


def test_perfectly_calibrated_has_small_ece_and_overconfident_large():
    y, probs = _overconfident(true_t=1.0)
    assert expected_calibration_error(y, probs) < 0.03
    y, probs = _overconfident(true_t=3.0)
    assert expected_calibration_error(y, probs) > 0.08


def test_temperature_recovers_the_overconfidence_and_lowers_ece():
    y, probs = _overconfident(true_t=3.0)
    t = fit_temperature(y, probs)
    assert t == pytest.approx(3.0, rel=0.12)
    assert expected_calibration_error(y, apply_temperature(probs, t)) < expected_calibration_error(y, probs) / 2


def test_multiclass_temperature_and_reliability():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (3000, 3))
    p_true = torch.softmax(torch.tensor(logits), 1).numpy()
    y = np.array([rng.choice(3, p=row) for row in p_true])
    probs = torch.softmax(torch.tensor(logits * 2.0), 1).numpy()
    assert fit_temperature(y, probs) == pytest.approx(2.0, rel=0.15)
    rel = reliability_curve(y, probs)
    assert rel["kind"] == "top-1 confidence" and len(rel["observed"]) == len(rel["mean_predicted"]) > 3


def test_fit_temperature_refuses_useless_input():
    with pytest.raises(DataError, match="one class"):
        fit_temperature(np.ones(10, int), np.full((10, 2), 0.5))
    with pytest.raises(DataError, match="no predictions"):
        fit_temperature(np.zeros(0, int), np.zeros((0, 2)))
    assert calibration_summary(np.zeros(0, int), np.zeros((0, 2)))["ece"] is None


@pytest.mark.parametrize("num_classes", [2, 3])
def test_temperature_stored_in_checkpoint_is_applied_on_load(tmp_path, num_classes):
    torch.manual_seed(0)
    from histoflow.config import ModelConfig

    cfg = ModelConfig(name="simple_cnn", params={"widths": [8, 16]})
    model = create_model(cfg, num_classes).eval()
    path = save_checkpoint(
        tmp_path / "best.pt",
        model,
        model_config=cfg.model_dump(mode="json"),
        class_names=[str(i) for i in range(num_classes)],
        image_px=32,
    )
    x = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8)
    raw, ckpt = load_checkpoint(path)
    assert ckpt.temperature is None
    with torch.no_grad():
        before = raw.probabilities(raw(x)).numpy()
    ckpt.with_temperature(2.5, fitted_on="test")
    assert not list(tmp_path.glob("*.tmp"))  # atomic: no temporary file left behind
    assert Checkpoint.read(path).temperature == 2.5
    scaled, ckpt = load_checkpoint(path)
    assert ckpt.temperature == 2.5
    with torch.no_grad():
        after = scaled.probabilities(scaled(x)).numpy()
    np.testing.assert_allclose(after, apply_temperature(before, 2.5), atol=1e-4)
    unscaled, ckpt = load_checkpoint(path, apply_temperature=False)
    assert ckpt.temperature == 2.5  # stored, but not folded into this model (checked below)
    with torch.no_grad():
        np.testing.assert_allclose(unscaled.probabilities(unscaled(x)).numpy(), before, atol=1e-6)
    with pytest.raises(CheckpointError, match="positive"):
        Checkpoint.read(path).with_temperature(0.0)
