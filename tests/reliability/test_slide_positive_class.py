"""predict-slide names its positive class (the checkpoint's) in slide.json, summary.json, the
GeoJSON classifications, the tile table and the heatmap's title and colour bar (issue 15)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import torch

from histoflow.checkpoint import save_checkpoint
from histoflow.config import ModelConfig
from histoflow.config.slides import AggregateConfig, SlidePredictConfig
from histoflow.models.factory import create_model
from histoflow.predict import outputs
from histoflow.predict.slide import predict_slides
from histoflow.slide import ArraySlide
from histoflow.tiling.readers import register_in_memory
from tests.predict.test_slide import PATTERN, pattern_image


def test_the_positive_class_is_named_everywhere(tmp_path, monkeypatch):
    torch.manual_seed(0)
    cfg = ModelConfig(name="simple_cnn", params={"widths": [8, 16], "depth": 1})
    # metastasis sorts first: the positive class is the checkpoint's, not the last name
    ckpt = save_checkpoint(
        tmp_path / "m.pt",
        create_model(cfg, 2),
        model_config=cfg.model_dump(),
        class_names=["normal", "metastasis"],
        image_px=32,
        extra={"mpp": 1.0},
    )
    drawn = []
    real = outputs.render_heatmap
    monkeypatch.setattr(outputs, "render_heatmap", lambda *a, **k: drawn.append(k) or real(*a, **k))
    slide = ArraySlide(pattern_image(PATTERN), mpp=1.0, slide_id="pattern-pos")
    register_in_memory(slide)
    every_tile = SlidePredictConfig(workers=1, aggregate=AggregateConfig(threshold=0.0))
    summary = predict_slides(ckpt, [slide.path], tmp_path / "o", every_tile, progress=False)
    d = tmp_path / "o" / slide.slide_id
    rep = json.loads((d / "slide.json").read_text())
    assert rep["positive_class"] == "metastasis" == summary["positive_class"]
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["positive_class"] == "metastasis"
    regions = json.loads((d / "regions.geojson").read_text())["features"]
    assert regions and {f["properties"]["classification"]["name"] for f in regions} == {"metastasis >= 0"}
    tiles = json.loads((d / "tiles.geojson").read_text())["features"]  # threshold 0: every tile called positive
    assert tiles and {f["properties"]["classification"]["name"] for f in tiles} == {"metastasis"}
    assert all("P(metastasis)" in f["properties"]["measurements"] for f in tiles)
    assert "prob_metastasis" in pq.read_schema(d / "tiles.parquet").names
    assert drawn[0]["label"] == "P(metastasis)" and "P(metastasis)" in drawn[0]["title"]
