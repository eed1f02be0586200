"""regions.geojson: the polygon of a region is the region, in level-0 px, and its area_px0 is the
polygon's area (a one-tile region of 187 px was drawn 163.6 px wide; issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from histoflow.config.slides import AggregateConfig, SlidePredictConfig
from histoflow.predict.geojson import regions_geojson
from histoflow.predict.heatmap import GridGeometry
from histoflow.predict.slide import predict_slide
from histoflow.slide import ArraySlide
from histoflow.tiling.readers import register_in_memory
from tests.predict.test_slide import PATTERN, TILE, pattern_image, predictor


def _area(ring) -> float:
    x, y = np.array(ring, float).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _polygon_area(feature) -> float:
    outline, *holes = feature["geometry"]["coordinates"]
    return _area(outline) - sum(_area(h) for h in holes)


def _bounds(feature):
    xs, ys = zip(*feature["geometry"]["coordinates"][0])
    return min(xs), max(xs), min(ys), max(ys)


@pytest.mark.parametrize("slide_mpp", [1.0, 0.5, 0.37])
def test_regions_of_a_synthetic_slide_have_their_true_size(tmp_path, slide_mpp):
    # the pattern drawn at TILE output px per cell: in level-0 px each cell is TILE / slide_mpp wide
    side = round(TILE / slide_mpp)
    img = pattern_image(PATTERN, px=side)
    slide = ArraySlide(img, mpp=slide_mpp, slide_id=f"pattern-{slide_mpp}")
    register_in_memory(slide)
    cfg = SlidePredictConfig(
        mpp=1.0, batch_size=8, workers=1, tissue_threshold=0.5, aggregate=AggregateConfig(threshold=0.5)
    )
    rep = predict_slide(predictor(cfg), slide.path, tmp_path)
    stride = rep["grid"]["stride_px0"]
    assert stride == side
    regions = json.loads((tmp_path / slide.slide_id / "regions.geojson").read_text())["features"]
    by_tiles = {f["properties"]["measurements"]["tiles"]: f for f in regions}
    assert sorted(by_tiles) == [1, 2, 4]
    for n, f in by_tiles.items():
        assert f["properties"]["measurements"]["area_px0"] == n * side**2
        assert _polygon_area(f) == pytest.approx(n * side**2)
    # the 2x2 block is rows 1-2, cols 2-3 of PATTERN; the single cell row 5, col 3
    assert _bounds(by_tiles[4]) == (2 * side, 4 * side, side, 3 * side)
    assert _bounds(by_tiles[1]) == (3 * side, 4 * side, 5 * side, 6 * side)


def test_area_and_polygon_agree_for_any_shape():
    geom = GridGeometry(x0=10, y0=20, stride_px0=187, region_px0=187, rows=7, cols=7)
    v = np.full((7, 7), np.nan)
    v[0:4, 0:4] = 0.9
    v[1:3, 1:3] = 0.1  # a hole
    v[4, 4] = v[5, 5] = v[5, 3] = 0.8  # diagonal neighbours: one region (8-connected)
    v[6, 0] = 0.7  # a region of its own
    feats = regions_geojson(v, geom, 0.5, "tumour >= 0.5")["features"]
    assert sorted(f["properties"]["measurements"]["tiles"] for f in feats) == [1, 15]
    for f in feats:
        assert _polygon_area(f) == pytest.approx(f["properties"]["measurements"]["area_px0"])
    big = max(feats, key=lambda f: f["properties"]["measurements"]["tiles"])
    assert len(big["geometry"]["coordinates"]) == 2  # the hole is an interior ring
    single = min(feats, key=lambda f: f["properties"]["measurements"]["tiles"])
    assert _bounds(single) == (10, 10 + 187, 20 + 6 * 187, 20 + 7 * 187)
    # with overlap a cell is its central stride square, as on the heatmap
    overlapping = GridGeometry(x0=0, y0=0, stride_px0=100, region_px0=150, rows=7, cols=7)
    single = min(regions_geojson(v, overlapping, 0.5, "t")["features"], key=_polygon_area)
    assert _bounds(single) == (25, 125, 625, 725) and _polygon_area(single) == 100**2
