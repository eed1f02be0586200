"""Tissue masks: glass, pen marks, specks, and the real CMU slide."""

from __future__ import annotations

import numpy as np
import pytest

from histoflow.core.errors import ConfigError
from histoflow.tiling.grid import window_fractions
from histoflow.tiling.tissue import mask_fraction, pen_mask, tissue_mask
from tests.conftest import need_data

GLASS = (242, 240, 244)
EOSIN = (222, 140, 185)
NUCLEI = (120, 70, 160)


def _slide(h=300, w=400, seed=0):
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = GLASS
    yy, xx = np.mgrid[:h, :w]
    disk = (yy - 150) ** 2 + (xx - 200) ** 2 < 100**2
    tissue = np.where(rng.random((h, w, 1)) < 0.2, NUCLEI, EOSIN).astype(np.int16)
    img[disk] = np.clip(tissue[disk] + rng.integers(-10, 10, (int(disk.sum()), 3)), 0, 255)
    return img, disk


@pytest.mark.parametrize("method", ["saturation", "od"])
def test_tissue_disk_is_found(method):
    img, disk = _slide()
    m = tissue_mask(img, downsample=16, mpp=0.5, method=method)
    iou = (m.mask & disk).sum() / (m.mask | disk).sum()
    assert iou > 0.95
    assert m.mask.shape == disk.shape and m.downsample == 16


def test_blank_glass_gives_an_empty_mask():
    rng = np.random.default_rng(1)
    img = np.clip(np.array(GLASS) + rng.integers(-4, 4, (200, 200, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(img, 16, mpp=0.5).mask.any()


def test_pen_marks_and_specks_are_rejected():
    import cv2

    img, disk = _slide()
    cv2.line(img, (20, 20), (380, 280), (30, 160, 60), 6)  # green marker across the tissue
    cv2.line(img, (20, 280), (380, 20), (40, 70, 190), 6)  # blue marker
    cv2.circle(img, (30, 270), 2, EOSIN, -1)  # dust-sized speck on the glass
    m = tissue_mask(img, 16, mpp=0.5)
    pen = pen_mask(img)
    assert pen[20, 20] and pen[280, 20]
    assert not m.mask[150, 200]  # both strokes cross the centre: ink is not tissue
    assert not m.mask[270, 30]  # speck below min area
    assert m.pen_fraction > 0.02
    # the tissue away from the ink survives
    assert m.mask[150, 120] and m.mask[90, 200]
    # H&E colours are never ink
    assert not pen_mask(np.array([[EOSIN, NUCLEI]], np.uint8)).any()


def test_window_fractions_match_the_slow_path():
    img, _ = _slide()
    m = tissue_mask(img, 4, mpp=0.5)
    xs, ys = np.arange(0, 1600 - 256 + 1, 200), np.arange(0, 1200 - 256 + 1, 200)
    fast = window_fractions(m, xs, ys, 256)
    for r, y in enumerate(ys):
        for c, x in enumerate(xs):
            assert fast[r, c] == pytest.approx(mask_fraction(m, int(x), int(y), 256))


def test_bad_method_and_input():
    img, _ = _slide()
    with pytest.raises(ConfigError, match="tissue method"):
        tissue_mask(img, 16, method="magic")
    with pytest.raises(ConfigError, match="HxWx3 uint8"):
        tissue_mask(img[..., 0], 16)


def test_cmu_mask_covers_the_tissue_strip():
    from histoflow.slide import open_slide

    s = open_slide(need_data("wsi", "cmu-1-small-region.svs"))
    view = s.read_downsampled(8)
    m = tissue_mask(view, 8, mpp=s.mpp)
    h, w = m.mask.shape
    # measured by eye on the thumbnail: a diagonal strip of skin, glass on the left third
    assert 0.25 < m.tissue_fraction < 0.5
    assert not m.mask[:, : w // 5].any() or m.mask[:, : w // 5].mean() < 0.02
    assert m.mask[int(h * 0.7), int(w * 0.55)]  # dermis in the lower middle
    assert not m.mask[int(h * 0.1), int(w * 0.1)]  # glass top-left
    assert m.pen_fraction < 0.01  # no ink on this slide
