"""Heatmap thumbnails, opened and read pixel by pixel: colour where tiles are, grey elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histoflow.core.pictures import HATCH
from histoflow.evaluate.slide_heatmap import LEGEND_PX, slide_heatmap_thumbnail, tiling_background
from tests.conftest import REPO, need_data

VIRIDIS = matplotlib.colormaps["viridis"]


def _rgb(v: float) -> np.ndarray:
    return (np.array(VIRIDIS(v)[:3]) * 255).round().astype(np.uint8)


def _is_viridis(px: np.ndarray) -> bool:
    ramp = (VIRIDIS(np.linspace(0, 1, 256))[:, :3] * 255).round()
    return bool(np.abs(ramp - px).sum(axis=1).min() <= 3)


def _tiles() -> pd.DataFrame:
    # level-0 300 x 300: a high tile, a low tile, an unscored tile, and nothing at (200, 200)
    return pd.DataFrame({"x": [0, 200, 0], "y": [0, 0, 200], "size_px0": [100, 100, 100], "value": [1.0, 0.0, np.nan]})


def test_colour_where_tiles_are_white_elsewhere_and_unscored_hatched(tmp_path):
    out = slide_heatmap_thumbnail(_tiles(), tmp_path / "h.png", max_px=150)  # 0.5 map px per level-0 px
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[1] == 150 + LEGEND_PX  # the map's long side, then the colour bar
    assert (img[10:40, 10:40] == _rgb(1.0)).all()  # the high tile
    assert (img[10:40, 110:140] == _rgb(0.0)).all()  # the low tile
    assert (img[110:140, 110:140] == 255).all()  # no tile: white
    unscored = img[102:148, 2:48]
    assert (unscored[..., 0] == unscored[..., 1]).all() and (unscored[..., 1] == unscored[..., 2]).all()  # grey
    assert (unscored == HATCH).all(axis=2).any() and not any(_is_viridis(p) for p in unscored.reshape(-1, 3))


def test_colour_bar_shows_the_colours_on_the_map(tmp_path):
    out = slide_heatmap_thumbnail(_tiles(), tmp_path / "h.png", max_px=150)
    img = np.asarray(Image.open(out).convert("RGB"))
    bar = img[:, 150 + 10]  # a column through the colour bar
    rows = [i for i, p in enumerate(bar) if not (p[0] == p[1] == p[2])]
    coloured = bar[rows[0] : rows[-1] + 1]
    assert len(coloured) > 50 and all(_is_viridis(p) for p in coloured)  # one run, viridis throughout
    assert (coloured[0] == _rgb(1.0)).all() and (coloured[-1] == _rgb(0.0)).all()  # high at the top


def test_values_outside_the_scale_are_clipped_and_overlaps_show_the_highest(tmp_path):
    tiles = pd.DataFrame({"x": [0, 50, 0], "y": [0, 0, 200], "size_px0": 100, "value": [0.9, 0.2, 2.0]})
    img = np.asarray(Image.open(slide_heatmap_thumbnail(tiles, tmp_path / "h.png", max_px=150)).convert("RGB"))
    assert (img[10, 30] == _rgb(0.9)).all()  # overlap of 0.9 and 0.2: 0.9 painted last
    assert (img[110, 10] == _rgb(1.0)).all()  # 2.0 drawn as the top of the scale


def _fake_tiling(root, slide_id: str, mask_downsample: float | None) -> None:
    d = root / "slides" / slide_id
    d.mkdir(parents=True)
    thumb = np.full((100, 80, 3), (230, 180, 220), np.uint8)  # a pink slide, 800 x 1000 at level 0
    Image.fromarray(thumb).save(d / "thumbnail.png")
    mask = np.zeros((100, 80), np.uint8)
    mask[40:80, 20:60] = 255
    Image.fromarray(mask).save(d / "mask.png")
    info: dict = {"levels": [{"level": 0, "width": 800, "height": 1000}]}
    if mask_downsample:
        info["mask_downsample"] = mask_downsample
    (d / "report.json").write_text(json.dumps({"slide": info}))


@pytest.mark.parametrize("recorded", [10.0, None])  # from report.json, or width / thumbnail width
def test_tiling_background_places_tiles_on_the_grey_slide(tmp_path, recorded):
    _fake_tiling(tmp_path, "S1", recorded)
    bg = tiling_background(tmp_path, "S1")
    assert bg is not None and bg.downsample == pytest.approx(10.0) and bg.tissue.sum() == 40 * 40
    tiles = pd.DataFrame({"x": [200], "y": [400], "size_px0": [200], "value": [0.5]})
    img = np.asarray(Image.open(slide_heatmap_thumbnail(tiles, tmp_path / "h.png", bg, max_px=100)).convert("RGB"))
    # map 80 x 100 at 0.1 px per level-0 px: the tile covers [40:60, 20:40]
    assert (img[42:58, 22:38] == _rgb(0.5)).all()
    outside = img[5:30, 5:70]
    assert (outside[..., 0] == outside[..., 2]).all() and outside.min() > 200  # light grey, not pink
    rest = img[62:78, 42:58]  # tissue without a tile: hatched grey
    assert (rest == HATCH).all(axis=2).any() and (rest[..., 0] == rest[..., 1]).all()


def test_tiling_background_without_thumbnail_uses_the_slide_dims(tmp_path):
    _fake_tiling(tmp_path, "S1", 10.0)
    (tmp_path / "slides" / "S1" / "thumbnail.png").unlink()
    bg = tiling_background(tmp_path, "S1")
    assert bg is not None and bg.image is None and bg.dims == (800, 1000)
    assert tiling_background(tmp_path, "absent") is None


def test_thumbnail_over_a_real_tiled_slide(tmp_path):
    """CMU-1-Small-Region tiled by `histoflow tile`: tiles from its manifest, drawn on its thumbnail."""
    slide = need_data("wsi", "cmu-1-small-region.svs")
    out = tmp_path / "tiles"
    cmd = [sys.executable, "-m", "histoflow.cli", "tile", str(slide), "--out", str(out), "--processes", "1"]
    subprocess.run(cmd + ["--tile-px", "128"], check=True, cwd=REPO, capture_output=True, timeout=300)
    m = pd.read_parquet(out / "manifest.parquet")
    values = np.where(m["y"] > m["y"].median(), 0.9, 0.1)
    tiles = m.assign(value=values)
    bg = tiling_background(out, "cmu-1-small-region")
    assert bg is not None and bg.tissue is not None
    img = np.asarray(Image.open(slide_heatmap_thumbnail(tiles, tmp_path / "cmu.png", bg)).convert("RGB"))
    w = img.shape[1] - LEGEND_PX
    assert max(img.shape[0], w) == 256
    s = 256 / 2967  # map px per level-0 px (the slide is 2220 x 2967)
    hi = m[values == 0.9].iloc[len(m) // 4]
    lo = m[values == 0.1].iloc[len(m) // 4]
    for row, v in ((hi, 0.9), (lo, 0.1)):
        cx, cy = int((row.x + row.size_px0 / 2) * s), int((row.y + row.size_px0 / 2) * s)
        assert (img[cy, cx] == _rgb(v)).all()
    map_px = img[:, :w].reshape(-1, 3)
    coloured = ~((map_px[:, 0] == map_px[:, 1]) & (map_px[:, 1] == map_px[:, 2]))
    assert 0.05 < coloured.mean() < 0.9  # tiles coloured, the rest of the slide grey
