"""Mitoses on a whole (in-memory) slide: tiles, level-0 coordinates, no duplicates where tiles
meet, hotspot and score, resume, and refusal of a far-off resolution."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from histoflow.checkpoint import Checkpoint
from histoflow.config.mitosis import DetectConfig, GradingConfig
from histoflow.config.slides import SlidePredictConfig
from histoflow.predict.mitosis import MitosisDetector, save_detector
from histoflow.predict.mitosis_slide import detect_slides, hotspot, nottingham_score
from histoflow.slide import ArraySlide
from histoflow.tiling.readers import register_in_memory
from tests.mitosis.synthetic import centre_darkness, disks
from tests.mitosis.test_detector import window_checkpoint

# disks on a 720 x 488 px slide: 256-px tiles overlapping by one 24-px window (stride 232) cover it
# exactly; (242, 100) straddles the seam where tile 0's window centres end (244) and tile 1's begin
CENTRES = [(60, 60), (242, 100), (400, 300), (420, 320), (650, 420)]


@pytest.fixture
def detector(tmp_path, monkeypatch):
    ckpt = Checkpoint.read(window_checkpoint(tmp_path / "w.pt"))
    det = MitosisDetector.from_checkpoint(save_detector(tmp_path / "d.pt", ckpt, DetectConfig(nms_um=3.0), 0.5, "t"))
    monkeypatch.setattr(MitosisDetector, "score_windows", lambda self, w: centre_darkness(w))
    return det


def test_every_disk_once_in_level0_pixels_with_hotspot_and_score(tmp_path, detector, monkeypatch):
    image = disks(size=(720, 488), centres=CENTRES, radius=8)
    path = register_in_memory(ArraySlide(image, mpp=0.25, slide_id="disks"))
    grading = GradingConfig(area_mm2=0.0025, cuts=(2, 3))  # a 50 um square: the two close disks
    tiles = SlidePredictConfig(tissue_threshold=0.0, workers=0)
    summary = detect_slides(detector, [path], tmp_path / "out", tiles, grading, tile_px=256, progress=False)
    table = pd.read_csv(tmp_path / "out" / "disks" / "detections.csv")
    found = sorted((int(round(x)), int(round(y))) for x, y in zip(table["x"], table["y"]))
    assert found == sorted(CENTRES), "each disk once, at its level-0 position"
    report = json.loads((tmp_path / "out" / "disks" / "slide.json").read_text())
    assert report["mitoses"] == 5 and report["hotspot"]["count"] == 2 and report["score"] == 2
    assert summary["mitoses"] == 5 and not summary["failed"]
    for name in ("heatmap.png", "top_detections.png", "detections.geojson", "density.npy"):
        assert (tmp_path / "out" / "disks" / name).is_file()
    again = detect_slides(detector, [path], tmp_path / "out", tiles, grading, tile_px=256, progress=False)
    assert again["resumed"] == ["disks"]
    # tiles another version of tiling.read would resample differently: the slide is redone
    monkeypatch.setattr("histoflow.predict.mitosis_slide.PIXELS_VERSION", -1)
    redone = detect_slides(detector, [path], tmp_path / "out", tiles, grading, tile_px=256, progress=False)
    assert redone["resumed"] == [] and redone["mitoses"] == 5


def test_a_coarse_slide_is_refused_unless_resampling_is_asked(tmp_path, detector):
    image = disks(size=(300, 200), centres=[(100, 100)], radius=4)
    path = register_in_memory(ArraySlide(image, mpp=0.5, slide_id="coarse"))
    tiles = SlidePredictConfig(tissue_threshold=0.0, workers=0)
    refused = detect_slides(detector, [path], tmp_path / "out", tiles, tile_px=256, progress=False)
    assert "allow-resample" in refused["failed"][path]
    tiles = SlidePredictConfig(tissue_threshold=0.0, workers=0, allow_resample=True)
    done = detect_slides(detector, [path], tmp_path / "out", tiles, tile_px=256, progress=False)
    table = pd.read_csv(tmp_path / "out" / "coarse" / "detections.csv")
    assert done["mitoses"] == 1 and abs(table["x"][0] - 100) <= 1 and abs(table["y"][0] - 100) <= 1


def test_hotspot_and_score_rules():
    rng = np.random.default_rng(0)
    spread = rng.uniform(0, 10000, (30, 2))
    cluster = np.array([[5000.0, 5000.0]]) + rng.uniform(0, 900, (12, 2))
    spot = hotspot(np.concatenate([spread, cluster]), side_um=1000.0)
    assert spot["count"] >= 12 and 4100 <= spot["x_um"] <= 5100 and 4100 <= spot["y_um"] <= 5100
    assert hotspot(np.zeros((0, 2)), 1000.0)["count"] == 0
    cuts = GradingConfig().cuts  # 2 mm^2: 0-7 -> 1, 8-14 -> 2, 15+ -> 3
    assert [nottingham_score(n, cuts) for n in (0, 7, 8, 14, 15, 40)] == [1, 1, 2, 2, 3, 3]


def test_atypia_checkpoint_scores_each_slide_detection_on_a_window_centred_on_it(tmp_path, detector):
    from histoflow.predict.mitosis_slide import detection_windows
    from tests.mitosis.synthetic import NUCLEUS

    image = disks(size=(720, 488), centres=CENTRES, radius=8)
    slide = ArraySlide(image, mpp=0.25, slide_id="disks-atypia")
    windows = detection_windows(slide, np.array(CENTRES, float), 32, 1.0)
    assert windows.shape == (5, 3, 32, 32)
    assert (windows[:, :, 16, 16] == np.array(NUCLEUS)[None]).all(), "each window's middle is its disk"
    edge = detection_windows(slide, np.array([[2.0, 480.0]]), 32, 1.0)  # shifted inside the slide
    assert edge.shape == (1, 3, 32, 32)
    coarse = detection_windows(ArraySlide(image[::2, ::2].copy(), mpp=0.5), np.array([[200.0, 150.0]]), 32, 0.5)
    assert (coarse[0, :, 16, 16] == np.array(NUCLEUS)).all(), "a 0.5 um/px slide is upsampled to the detector's 0.25"

    path = register_in_memory(slide)
    atypia = window_checkpoint(tmp_path / "atyp.pt", classes=("normal", "atypical"), image_px=32)
    tiles = SlidePredictConfig(tissue_threshold=0.0, workers=0)
    detect_slides(detector, [path], tmp_path / "out", tiles, tile_px=256, progress=False, atypia_checkpoint=atypia)
    table = pd.read_csv(tmp_path / "out" / "disks-atypia" / "detections.csv")
    assert len(table) == 5 and table["p_atypical"].between(0, 1).all()
    features = json.loads((tmp_path / "out" / "disks-atypia" / "detections.geojson").read_text())["features"]
    assert all("p_atypical" in f["properties"]["measurements"] for f in features)
    plain = detect_slides(detector, [path], tmp_path / "out", tiles, tile_px=256, progress=False)
    assert plain["resumed"] == [], "another atypia setting is another result, not a finished slide"
    assert pd.read_csv(tmp_path / "out" / "disks-atypia" / "detections.csv")["p_atypical"].isna().all()
