"""CLAHE: what each mode changes and keeps, the transform wrapper, and config validation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from histoflow.core.errors import ConfigError, DataError
from histoflow.preprocess import Clahe, ClaheConfig, PreprocessConfig, apply_clahe
from histoflow.preprocess.clahe import clahe


def _low_contrast(seed: int = 0) -> np.ndarray:
    """A washed-out H&E-like tile: small spread of values around pink."""
    rng = np.random.default_rng(seed)
    base = np.array([200, 160, 190], dtype=float)
    blobs = rng.normal(0, 8, (96, 96, 1)) * np.array([1.0, 1.3, 0.8])
    return np.clip(base + blobs, 0, 255).astype(np.uint8)


def test_lab_mode_raises_lightness_contrast_and_keeps_chroma():
    img = _low_contrast()
    out = clahe(img, clip_limit=3.0, grid=4, mode="lab")
    lab_in = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(int)
    lab_out = cv2.cvtColor(out, cv2.COLOR_RGB2LAB).astype(int)
    assert lab_out[..., 0].std() > 1.5 * lab_in[..., 0].std()
    # a and b only move by the LAB <-> RGB rounding and gamut clipping, far less than L does
    assert np.abs(lab_out[..., 1:] - lab_in[..., 1:]).mean() < 2.0


def test_rgb_mode_equalises_each_channel_like_opencv():
    img = _low_contrast(1)
    out = clahe(img, clip_limit=2.0, grid=8, mode="rgb")
    op = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    for c in range(3):
        assert np.array_equal(out[..., c], op.apply(np.ascontiguousarray(img[..., c])))
    assert out[..., 1].std() > img[..., 1].std()


def test_transform_matches_function_on_chw_and_nchw():
    img = _low_contrast(2)
    chw = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    module = Clahe(clip_limit=2.0, grid=8, mode="lab")
    expected = clahe(img, 2.0, 8, "lab")
    assert np.array_equal(module(chw).permute(1, 2, 0).numpy(), expected)
    batch = module(torch.stack([chw, chw]))
    assert batch.shape == (2, 3, 96, 96) and np.array_equal(batch[1].permute(1, 2, 0).numpy(), expected)


def test_package_name_is_the_function_whatever_the_import_order():
    import histoflow.preprocess.clahe as module

    assert apply_clahe is module.clahe and callable(apply_clahe)


def test_invalid_parameters_and_inputs():
    with pytest.raises(ConfigError, match="clip_limit"):
        clahe(_low_contrast(), clip_limit=0)
    with pytest.raises(ConfigError, match="mode"):
        Clahe(mode="hsv")
    with pytest.raises(DataError, match="HxWx3 uint8"):
        clahe(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        ClaheConfig(grid=0)
    with pytest.raises(ValueError):
        PreprocessConfig(clahe={"clip_limit": 2.0, "tile": 8})  # unknown key: Strict forbids it
    assert PreprocessConfig(clahe={"clip_limit": 1.0}).clahe.grid == 8


@settings(max_examples=30, deadline=None)
@given(
    img=arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.just(3))),
    mode=st.sampled_from(["lab", "rgb"]),
    fill=st.sampled_from([None, 0, 255]),
)
def test_any_image_keeps_shape_and_dtype(img, mode, fill):
    if fill is not None:
        img = np.full_like(img, fill)
    out = clahe(img, 2.0, 8, mode)
    assert out.shape == img.shape and out.dtype == np.uint8
    if fill is not None:  # a uniform image has nothing to equalise: it stays uniform
        assert out.min() == out.max()
