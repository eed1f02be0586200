"""heatmap.png as a person reads it: each tile's colour is the colour bar's colour at its value
(opaque, not mixed with the stain), unscored tissue is hatched, and the class is named
"P(class 1)" when class names are bare numbers (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from histoflow.checkpoint import Checkpoint
from histoflow.config.slides import SlidePredictConfig
from histoflow.core.pictures import HATCH, UNSCORED, value_colours
from histoflow.predict import outputs
from histoflow.predict.heatmap import GridGeometry, heatmap_figure, render_heatmap
from histoflow.predict.slide import Predictor, predict_slide
from histoflow.slide import ArraySlide
from histoflow.tiling.readers import register_in_memory
from tests.predict.test_slide import PATTERN, TILE, dark_model, pattern_image

GEOM = GridGeometry(x0=0, y0=0, stride_px0=100, region_px0=100, rows=2, cols=3)
VALUES = np.array([[0.1, 0.5, np.nan], [0.8, 0.95, 0.3]], np.float32)
PINK = (200, 120, 180)


def _pixel(px: np.ndarray, ax, x: float, y: float) -> np.ndarray:
    """The RGB pixel of the rendered figure at data coordinates (x, y) of `ax`."""
    dx, dy = ax.transData.transform((x, y))
    return px[int(round(px.shape[0] - dy)), int(round(dx))].astype(int)


def test_every_tile_has_the_colour_bar_colour_of_its_value(tmp_path):
    thumb = np.full((200, 300, 3), PINK, np.uint8)  # a pink slide at downsample 1
    tissue = np.ones((20, 30), bool)  # all tissue: the cell without a score must be hatched
    fig, map_ax, cax = heatmap_figure(thumb, 1.0, VALUES, GEOM, tissue, label="P(class 1)", mpp=0.5)
    fig.canvas.draw()
    px = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    render_heatmap(tmp_path / "h.png", thumb, 1.0, VALUES, GEOM, tissue, label="P(class 1)", mpp=0.5)
    png = np.asarray(Image.open(tmp_path / "h.png").convert("RGB"))
    assert png.shape == px.shape
    x_mid = float(np.mean(cax.get_xlim()))
    for (r, c), v in np.ndenumerate(VALUES):
        if np.isnan(v):
            continue
        on_map = _pixel(png, map_ax, c * 100 + 50, r * 100 + 50)
        on_bar = _pixel(png, cax, x_mid, float(v))
        np.testing.assert_array_equal(on_map, value_colours(np.array([v]))[0])  # opaque: no stain mixed in
        assert np.abs(on_map - on_bar).max() <= 3, (v, on_map, on_bar)  # the bar's colour at that value
    # the tissue cell without a score: grey lines on light grey, no colormap colour
    cell = np.array([_pixel(png, map_ax, x, y) for x in range(210, 290, 3) for y in range(10, 90, 3)])
    colours = {tuple(p) for p in cell}
    assert tuple(HATCH) in colours and (UNSCORED,) * 3 in colours and colours <= {tuple(HATCH), (UNSCORED,) * 3}
    assert cax.get_ylabel() == "P(class 1)"


def test_bare_number_classes_read_as_class_names(tmp_path, monkeypatch):
    drawn = []
    real = outputs.render_heatmap
    monkeypatch.setattr(outputs, "render_heatmap", lambda *a, **k: drawn.append(k) or real(*a, **k))
    ckpt = Checkpoint("<dark model>", {"class_names": ["0", "1"], "num_classes": 2, "image_px": TILE})
    cfg = SlidePredictConfig(mpp=1.0, batch_size=16, workers=1)
    pred = Predictor(dark_model(), ckpt, cfg, TILE, 1.0, "dark-v1", torch.device("cpu"))
    slide = register_in_memory(ArraySlide(pattern_image(PATTERN), mpp=1.0, slide_id="digits"))
    predict_slide(pred, slide, tmp_path)
    assert drawn[0]["label"] == "P(class 1)" and "of P(class 1) =" in drawn[0]["title"]
    assert drawn[0]["mpp"] == pytest.approx(1.0)  # the scale bar's resolution
