"""A slide lab folder made once per session from the real CMU slide: predict-slide output (an
untrained tiny checkpoint, with a stand-in attention aggregator so MIL attention is there too),
a tiling run, a detect-mitoses folder in its documented format, and bad input beside them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import need_data

SLIDE_ID = "cmu-1-small-region"


class DarknessAttention:
    """A TileAggregator whose attention is known: the first feature, made positive."""

    name, report_key, label = "attention_mil", "mil", "attention-MIL"

    def check_backbone(self, checkpoint_fingerprint: str) -> None:
        pass

    def __call__(self, features: np.ndarray) -> dict:
        a = np.abs(features[:, 0]).astype(np.float64) + 1e-6
        a = a / a.sum()
        return {"score": float(a.max()), "attention": a, "report": {"probabilities": [0.5, 0.5]}}


def tiny_checkpoint(path: Path) -> Path:
    from tests.predict.test_slide import _tiny_checkpoint

    return _tiny_checkpoint(path, mpp=1.944, class_names=("normal", "tumour"))


def mitosis_folder(out: Path, slide_path: Path) -> Path:
    """detect-mitoses' per-slide output as that verb writes it: slide.json, detections.csv/.geojson."""
    d = out / SLIDE_ID
    d.mkdir(parents=True)
    pts = [(400.0, 500.0, 0.95, 0.1), (1200.0, 1500.0, 0.7, 0.8), (1800.0, 2600.0, 0.55, 0.2)]
    (d / "detections.csv").write_text(
        "slide,x,y,score,p_atypical\n" + "".join(f"{SLIDE_ID},{x},{y},{s},{p}\n" for x, y, s, p in pts)
    )
    feats = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [x, y]},
            "properties": {
                "objectType": "annotation",
                "name": SLIDE_ID,
                "classification": {"name": "Atypical mitosis" if p >= 0.5 else "Mitosis", "color": [220, 30, 30]},
                "measurements": {"score": s, "p_atypical": p},
            },
        }
        for x, y, s, p in pts
    ]
    (d / "detections.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    mpp = 0.499
    side_px = 1000 * (0.5**0.5) / mpp  # a 0.5 mm^2 hotspot
    report = {
        "slide_id": SLIDE_ID,
        "path": str(slide_path),
        "status": "complete",
        "mitoses": 3,
        "hotspot": {"count": 2, "x_um": 300 * mpp, "y_um": 400 * mpp, "area_mm2": 0.5, "x0": 300.0, "y0": 400.0},
        "score": 1,
    }
    (d / "slide.json").write_text(json.dumps(report))
    assert side_px > 0
    return out


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> dict:
    """{root, slides, preds, tiles, mitoses, broken, bad_geojson}: every kind of input the viewer takes."""
    from histoflow.config.slides import SlidePredictConfig
    from histoflow.config.tiling import TileConfig
    from histoflow.predict.slide import predict_slides
    from histoflow.tiling import extract_tiles

    src = need_data("wsi", "cmu-1-small-region.svs")
    root = tmp_path_factory.mktemp("lab")
    slides = root / "slides"
    slides.mkdir()
    slide = slides / src.name
    shutil.copy(src, slide)
    broken = slides / "broken.svs"
    broken.write_bytes(b"not a slide at all" * 10)
    ckpt = tiny_checkpoint(root / "tiny.pt")
    cfg = SlidePredictConfig(workers=1, batch_size=64, tissue_threshold=0.3, thumbnail_px=400)
    predict_slides(ckpt, [slide], root / "preds", cfg, progress=False, aggregator=DarknessAttention())
    extract_tiles([slide], root / "tiles", TileConfig(tile_px=128, mpp=2.0), workers=1, progress=False)
    mitosis_folder(root / "mitoses", slide)
    bad = root / "annotations" / f"{SLIDE_ID}_bad.geojson"
    bad.parent.mkdir()
    bad.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Point"')
    return {
        "root": root,
        "slide": slide,
        "slides": slides,
        "preds": root / "preds",
        "tiles": root / "tiles",
        "mitoses": root / "mitoses",
        "broken": broken,
        "bad_geojson": bad,
    }


@pytest.fixture(scope="session")
def lab_paths(lab) -> list[Path]:
    return [lab["slides"], lab["preds"], lab["tiles"], lab["mitoses"], lab["bad_geojson"]]
