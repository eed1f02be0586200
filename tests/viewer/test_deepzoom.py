"""Deep-zoom tiles over histoflow's readers: OpenSlide's DeepZoomGenerator geometry, the pixels of
every backend, the overview path for single-level images, and addresses off the pyramid."""

from __future__ import annotations

import numpy as np
import pytest

from histoflow.slide import ArraySlide, open_slide
from histoflow.slide.montage import write_pyramid_tiff
from histoflow.viewer.deepzoom import DeepZoom, DeepZoomGeometry, TileOutOfRange
from tests.conftest import need_data


def gradient(w: int, h: int) -> np.ndarray:
    """A smooth image (x in red, y in green): resampling moves values by little, shifts by a lot."""
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return np.stack([x, y, np.full_like(x, 128)], 2).round().astype(np.uint8)


def test_geometry_is_openslides_deepzoom_generator():
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    path = need_data("wsi", "cmu-1-small-region.svs")
    ours = DeepZoom(open_slide(path)).geometry
    theirs = DeepZoomGenerator(openslide.OpenSlide(str(path)), tile_size=254, overlap=1)
    assert ours.level_count == theirs.level_count == 13
    for level in range(ours.level_count):
        assert ours.level_size(level) == theirs.level_dimensions[level]
        assert ours.level_tiles(level) == theirs.level_tiles[level]


@pytest.mark.parametrize(("w", "h"), [(1, 1), (2, 1), (3, 5), (254, 254), (255, 100), (1000, 3000), (4097, 17)])
def test_geometry_edges(w, h):
    g = DeepZoomGeometry(w, h)
    assert g.level_size(g.level_count - 1) == (w, h) and g.level_size(0) == (1, 1)
    top = g.level_count - 1
    cols, rows = g.level_tiles(top)
    covered = sum(g.tile_box(top, c, 0)[2] for c in range(cols)) - 2 * (cols - 1)  # overlaps counted once
    assert covered == w
    last = g.tile_box(top, cols - 1, rows - 1)
    assert last[0] + last[2] == w and last[1] + last[3] == h


def test_tiles_match_openslide_and_addresses_off_the_pyramid_raise():
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    path = need_data("wsi", "cmu-1-small-region.svs")
    dz = DeepZoom(open_slide(path))
    ref = DeepZoomGenerator(openslide.OpenSlide(str(path)))
    g = dz.geometry
    for level in range(8, g.level_count):  # below 8, DeepZoomGenerator's thumbnail() changes tile shapes
        cols, rows = g.level_tiles(level)
        for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
            ours = dz.tile(level, col, row).astype(int)
            theirs = np.asarray(ref.get_tile(level, (col, row))).astype(int)
            assert ours.shape == theirs.shape
            # full resolution: the same pixels; below it, area averaging vs Lanczos
            assert np.abs(ours - theirs).mean() < (0.01 if level == g.level_count - 1 else 4.0), (level, col, row)
    top = g.level_count - 1
    cols, rows = g.level_tiles(top)
    for address in [(top + 1, 0, 0), (-1, 0, 0), (top, cols, 0), (top, 0, rows), (top, -1, 0)]:
        with pytest.raises(TileOutOfRange):
            dz.tile(*address)
    jpeg = dz.tile_bytes(top, 0, 0)
    assert jpeg[:2] == b"\xff\xd8"


def test_pyramid_tiff_and_array_give_the_same_tiles(tmp_path):
    img = gradient(1500, 1100)
    tif = write_pyramid_tiff(tmp_path / "g.tif", img, mpp=0.5, quality=95)
    reader = open_slide(tif)
    assert reader.backend == "tifffile" and reader.level_count >= 2
    a, b = DeepZoom(reader), DeepZoom(ArraySlide(img))
    g = a.geometry
    for level in range(g.level_count):
        cols, rows = g.level_tiles(level)
        for col, row in {(0, 0), (cols - 1, rows - 1)}:
            diff = np.abs(a.tile(level, col, row).astype(int) - b.tile(level, col, row).astype(int))
            assert diff.mean() < 2.5, (level, col, row, diff.mean())  # JPEG in the TIFF, nothing shifted


def test_single_level_image_serves_low_zoom_from_its_overview():
    img = gradient(6000, 4000)
    slide = ArraySlide(img)
    calls = []
    original = slide.read_region

    def counting(xy, level, size):
        calls.append(size)
        return original(xy, level, size)

    slide.read_region = counting  # type: ignore[method-assign]
    dz = DeepZoom(slide, overview_px=1024)
    assert dz.overview_downsample == pytest.approx(6000 / 1024)
    g = dz.geometry
    low = g.level_count - 5  # 16 level-0 px per tile px: no level within 4x, so the overview serves
    ref = DeepZoom(ArraySlide(img), overview_px=10**9)  # never an overview: reads the region every time
    cols, rows = g.level_tiles(low)
    tile = dz.tile(low, cols - 1, rows - 1)
    assert np.abs(tile.astype(int) - ref.tile(low, cols - 1, rows - 1).astype(int)).mean() < 3.0
    n_reads = len(calls)
    for col in range(cols):  # more low-zoom tiles: no region read of the slide any more
        dz.tile(low, col, 0)
    assert len(calls) == n_reads
    dz.tile(g.level_count - 1, 3, 3)  # full resolution reads the slide itself
    assert calls[-1] == (255, 255) or max(calls[-1]) <= 256
