"""predict_images: arrays and paths in memory, prepared as in training; Classifier.probabilities on images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from histoflow.checkpoint import Checkpoint
from histoflow.core.errors import DataError
from histoflow.predict.images import predict_images
from tests.conftest import need_data
from tests.predict.test_slide import _tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Checkpoint:
    return Checkpoint.read(_tiny_checkpoint(tmp_path_factory.mktemp("m") / "m.pt"))


def test_arrays_floats_and_paths_give_the_same_probabilities(ckpt, tmp_path):
    patch = sorted(need_data("pcam", "valid", "1").glob("*.jpg"))[0]
    pixels = np.asarray(Image.open(patch).convert("RGB"))
    probs = predict_images(ckpt, [pixels, pixels / 255.0, patch, str(patch)])
    assert probs.shape == (4, 2) and np.allclose(probs.sum(1), 1)
    assert np.allclose(probs, probs[0], atol=1e-6)
    stacked = predict_images(ckpt.path, np.stack([pixels, pixels[::-1]]))  # NxHxWx3, from the file
    assert np.allclose(stacked[0], probs[0], atol=1e-6) and not np.allclose(stacked[1], probs[0], atol=1e-6)
    # a 48 px image is resized to the model's 96 px, as training would have done
    small = np.asarray(Image.fromarray(pixels).resize((48, 48)))
    assert predict_images(ckpt, small).shape == (1, 2)


def test_bad_images_are_refused_with_their_position(ckpt):
    with pytest.raises(DataError, match=r"images\[1\]: expected an HxWx3 RGB image"):
        predict_images(ckpt, [np.zeros((96, 96, 3), np.uint8), np.zeros((96, 96), np.uint8)])
    with pytest.raises(DataError, match=r"images\[0\]: expected uint8 \(0-255\) or float \(0-1\)"):
        predict_images(ckpt, [np.full((96, 96, 3), 200.0)])
    assert predict_images(ckpt, []).shape == (0, 2)


def test_probabilities_take_logits_or_images_but_never_unscaled_floats(ckpt):
    model = ckpt.model().eval()
    x = torch.randint(0, 256, (3, 3, 96, 96), dtype=torch.uint8)
    with torch.no_grad():
        from_images = model.probabilities(x)
        from_logits = model.probabilities(model(x))
        assert torch.allclose(from_images, from_logits) and from_images.shape == (3, 2)
        assert torch.allclose(model.probabilities(x.float() / 255), from_images, atol=1e-5)
        with pytest.raises(ValueError, match="scaled to 0-1"):
            model.probabilities(x.float())
