"""How a tile's region becomes tile_px (tiling.read): the box-then-linear path at factors near a
whole number, its geometry, its closeness to area interpolation, and block reads equal to
single-tile reads on it."""

from __future__ import annotations

import numpy as np
import pytest

from histoflow.slide import open_slide
from histoflow.slide.array import ArraySlide
from histoflow.tiling.grid import TileSpec
from histoflow.tiling.read import box_factor, group_blocks, read_tile, read_tiles, resize_tile, window_px
from tests.conftest import need_data

CMU = ("wsi", "cmu-1-small-region.svs")


def spec(x: int, y: int, read_px: int = 187, tile_px: int = 96, level: int = 0) -> TileSpec:
    return TileSpec("<array>", "s", x, y, level, read_px, read_px, tile_px, 0.972, 1.0, 0)


@pytest.mark.parametrize(
    ("read_px", "tile_px", "factor"),
    [
        (187, 96, 2),  # 0.972 um/px from a 0.499 um/px slide
        (373, 96, 4),  # 0.972 um/px from a 0.25 um/px slide
        (202, 96, 2),  # 2.10: residual downsampling by 5%
        (192, 96, 1),  # exactly 2: area interpolation's exact fast path
        (144, 96, 1),  # 1.5: not near a whole number
        (240, 96, 1),  # 2.5: nor this
        (96, 96, 1),
        (50, 96, 1),  # upsampling
    ],
)
def test_box_factor(read_px, tile_px, factor):
    assert box_factor(read_px, tile_px) == factor


def reference(window: np.ndarray, s: TileSpec) -> np.ndarray:
    """Float box means, then bilinear sampling at the centres area interpolation uses."""
    f = box_factor(s.read_px, s.tile_px)
    n = window.shape[0] // f
    cells = window[: n * f, : n * f].astype(np.float64).reshape(n, f, n, f, 3).mean((1, 3))
    step = s.read_px / f / s.tile_px
    p = np.clip((np.arange(s.tile_px) + 0.5) * step - 0.5, 0, n - 1)
    i0 = np.floor(p).astype(int)
    i1, w = np.minimum(i0 + 1, n - 1), p - i0
    rows = cells[i0] * (1 - w)[:, None, None] + cells[i1] * w[:, None, None]
    return rows[:, i0] * (1 - w)[None, :, None] + rows[:, i1] * w[None, :, None]


@pytest.mark.parametrize(("read_px", "tile_px"), [(187, 96), (373, 96), (202, 96), (515, 256)])
def test_box_path_samples_where_area_interpolation_centres_its_pixels(read_px, tile_px):
    rng = np.random.default_rng(0)
    s = spec(0, 0, read_px, tile_px)
    window = rng.integers(0, 256, (window_px(s), window_px(s), 3), dtype=np.uint8)
    out = resize_tile(window, s)
    assert out.shape == (tile_px, tile_px, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    # two roundings (cell means to uint8, then the interpolation) stay within 1.5 grey levels of the
    # exact float result; sampling a tenth of a pixel off would miss by tens on this noise image
    assert np.abs(out.astype(np.float64) - reference(window, s)).max() <= 1.5


def test_box_path_stays_close_to_area_interpolation_on_tissue():
    import cv2

    slide = open_slide(need_data(*CMU))
    s = spec(0, 0)
    diffs, soft = [], []
    for x, y in [(300, 400), (900, 1200), (1500, 2000), (1000, 600)]:
        window = slide.read_region((x, y), 0, (window_px(s), window_px(s)))
        area = cv2.resize(window[:187, :187], (96, 96), interpolation=cv2.INTER_AREA).astype(np.float64)
        boxed = resize_tile(window, s).astype(np.float64)
        diffs.append(np.abs(boxed - area).mean())
        soft.append(np.abs(np.diff(boxed, axis=1)).mean() / np.abs(np.diff(area, axis=1)).mean())
    slide.close()
    # measured on these windows: 0.0 (glass), 4.3-5.8 grey levels (dense tissue) from area's pixels,
    # with 0.84-0.86 of its pixel-to-pixel contrast: a little softer, never sharper
    assert max(diffs) < 8, diffs
    assert 0.75 < min(soft) and max(soft) <= 1.0, soft


def test_block_reads_equal_single_reads_on_the_box_path_with_mixed_cell_alignments():
    """Overlapping tiles whose offsets differ by odd amounts need differently aligned box cells:
    the block is reduced once per alignment, and every tile equals its own single read."""
    rng = np.random.default_rng(1)
    slide = ArraySlide(rng.integers(0, 256, (700, 900, 3), dtype=np.uint8), mpp=0.499, slide_id="s", levels=1)
    specs = [spec(x, y) for y in (0, 93, 187) for x in (0, 93, 186, 280, 373)]
    blocks = group_blocks(slide, specs)
    assert len(blocks) < len(specs) / 3, "overlapping tiles should share region reads"
    for got, s in zip(read_tiles(slide, specs), specs):
        np.testing.assert_array_equal(got, read_tile(slide, s), err_msg=str((s.x, s.y)))


def test_block_reads_equal_single_reads_at_0972_on_a_real_slide():
    from histoflow.config.slides import SlidePredictConfig
    from histoflow.predict.tiles import plan_tiles

    path = need_data(*CMU)
    slide = open_slide(path)
    plan = plan_tiles(slide, 96, 0.972, SlidePredictConfig(mpp=0.972, overlap_px=48, tissue_threshold=0))
    specs = plan.specs[:150]
    assert box_factor(specs[0].read_px, specs[0].tile_px) == 2
    blocked = read_tiles(slide, specs)
    fresh = open_slide(path)
    for s, img in zip(specs, blocked):
        np.testing.assert_array_equal(img, read_tile(fresh, s), err_msg=s.tile_id)
    fresh.close()
    slide.close()
