"""The tiling thumbnail as a person reads it: the slide in its own colours at a useful size, the
tissue outline and tiles drawn, a legend and a scale bar from the slide's mpp (issue 20)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from histoflow.core.pictures import scale_bar_um
from histoflow.slide import ArraySlide
from histoflow.tiling import TileConfig, plan_slide
from histoflow.tiling.preview import Caption, draw_overview
from histoflow.tiling.readers import register_in_memory
from histoflow.tiling.tissue import TissueMask
from tests.conftest import need_data

CMU_DIMS, CMU_MPP = (2220, 2967), 0.499


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _longest_black_run(rows: np.ndarray) -> int:
    best = 0
    for row in rows:
        dark = np.concatenate([[0], (row.max(axis=1) < 40).astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(dark))
        if len(edges):
            best = max(best, int((edges[1::2] - edges[::2]).max()))
    return best


def test_thumbnail_is_large_unwashed_with_legend_and_scale_bar():
    slide = need_data("wsi", "cmu-1-small-region.svs")
    cfg = TileConfig(tile_px=96, mpp=0.972)
    plan = plan_slide(str(slide), cfg)
    assert plan.error is None and plan.specs
    img = _png(plan.thumbnail_png)
    ds = max(CMU_DIMS) / cfg.thumbnail_px
    width = round(CMU_DIMS[0] / ds)
    assert cfg.thumbnail_px >= 1000 and img.shape[1] == width and img.shape[0] > cfg.thumbnail_px + 60
    picture, legend = img[: cfg.thumbnail_px], img[cfg.thumbnail_px :]
    # the tissue keeps its stain colours: no green wash (only the outline is green)
    mask = _png(plan.mask_png) > 127
    inner = cv2.erode(mask[..., 0].astype(np.uint8), np.ones((3, 3), np.uint8))  # off the outline
    tissue = cv2.resize(inner, picture.shape[1::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
    rgb = picture[tissue].astype(int)
    green = (rgb[:, 1] > np.maximum(rgb[:, 0], rgb[:, 2]) + 10).mean()
    assert green < 0.05, f"{green:.0%} of the tissue is green"
    # a legend strip on white, and a scale bar of a round length drawn at the picture's scale
    assert (legend == 255).all(axis=2).mean() > 0.8 and (legend.max(axis=2) < 80).any()
    um = scale_bar_um(width * ds * CMU_MPP)
    assert _longest_black_run(legend) == pytest.approx(um / (CMU_MPP * ds), abs=3)
    # the unmarked view the report's slide heatmaps draw on, at the mask's size
    assert _png(plan.view_jpg).shape[:2] == mask.shape[:2]


def test_thumbnail_size_is_configurable_and_no_tile_changes():
    path = register_in_memory(ArraySlide(np.full((300, 400, 3), (200, 120, 180), np.uint8), mpp=1.0, slide_id="s"))
    small = TileConfig(tile_px=32, mpp=1.0, thumbnail_px=1000)
    assert small.fingerprint() == TileConfig(tile_px=32, mpp=1.0).fingerprint()  # a picture, not a tile
    plan = plan_slide(path, small)
    assert plan.error is None and _png(plan.thumbnail_png).shape[1] == 1000  # a small slide is enlarged


def test_without_mpp_the_legend_says_so_instead_of_a_scale_bar():
    view = np.full((300, 400, 3), (200, 120, 180), np.uint8)
    mask = TissueMask(np.ones((30, 40), bool), 10.0, 0.0, 0.0, "saturation")
    caption = Caption("s", (4000, 3000), None, 32, 1.0, 0.5)
    legend = draw_overview(view, 10.0, mask, [], 64, caption)[300:]
    with_mpp = draw_overview(view, 10.0, mask, [], 64, Caption("s", (4000, 3000), 0.5, 32, 1.0, 0.5))[300:]
    assert _longest_black_run(legend) < 30 < _longest_black_run(with_mpp)
