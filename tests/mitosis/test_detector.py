"""The detector: proposals -> windows -> scores -> NMS; its checkpoint; detect-mitoses outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from histoflow.checkpoint import Checkpoint, save_checkpoint
from histoflow.config import ModelConfig
from histoflow.config.mitosis import DetectConfig
from histoflow.core.errors import CheckpointError, DataError
from histoflow.models.factory import create_model
from histoflow.predict.mitosis import MitosisDetector, nms, save_detector
from tests.mitosis.synthetic import centre_darkness, disks


def window_checkpoint(path, classes=("other", "mitosis"), mpp=0.25, image_px=24):
    extra = {"positive_class": classes[1]} | ({"mpp": mpp} if mpp else {})
    cfg = {"name": "simple_cnn", "params": {"widths": [4, 8], "depth": 1}}
    model = create_model(ModelConfig(**cfg), 2)
    return save_checkpoint(path, model, model_config=cfg, class_names=list(classes), image_px=image_px, extra=extra)


@pytest.fixture
def detector(tmp_path, monkeypatch):
    det = MitosisDetector.from_checkpoint(window_checkpoint(tmp_path / "w.pt"), DetectConfig(nms_um=3.0))
    monkeypatch.setattr(det, "score_windows", centre_darkness)
    return det


def as_set(frame: pd.DataFrame, min_score=0.5):
    kept = frame[frame["score"] >= min_score]
    return sorted((int(round(x)), int(round(y))) for x, y in zip(kept["x"], kept["y"]))


def test_detections_sit_on_the_dark_disks(detector):
    found = detector.detect(disks(), 0.25)
    assert as_set(found) == [(40, 40), (60, 100), (90, 70)]
    assert list(found.columns) == ["x", "y", "score", "density"]
    assert found["score"].is_monotonic_decreasing


def test_detections_move_with_the_content_not_with_the_image(detector):
    # the "not passable by position" property: shifting what the image shows shifts the detections
    base = [(40, 40), (90, 70), (60, 100)]
    shifted = [(x + 7, y - 5) for x, y in base]
    assert as_set(detector.detect(disks(centres=shifted), 0.25)) == sorted(shifted)


def test_grid_proposals_find_the_same_disks(detector):
    detector.cfg = DetectConfig(proposals="grid", grid_stride_px=2, nms_um=3.0)
    assert as_set(detector.detect(disks(), 0.25)) == [(40, 40), (60, 100), (90, 70)]


def test_nms_keeps_the_best_of_close_points():
    points = np.array([[0, 0], [3, 0], [10, 0], [30, 0]], float)
    assert nms(points, np.array([0.5, 0.9, 0.8, 0.1]), 5.0).tolist() == [1, 2, 3]  # 0 is within 5 px of 1
    assert nms(np.zeros((0, 2)), np.zeros(0), 5.0).tolist() == []


def test_far_resolution_is_refused_unless_resampled(detector):
    img = disks(size=(64, 64), centres=((20, 20), (45, 40)), radius=4)  # the same disks at 0.5 um/px
    with pytest.raises(DataError, match="0.5 um/px is far from the detector's 0.25.*--allow-resample"):
        detector.detect(img, 0.5)
    found = detector.detect(img, 0.5, resample=True)  # upsampled x2 inside, reported in the image's pixels
    assert np.abs(np.array(as_set(found)) - [(20, 20), (45, 40)]).max() <= 1
    detector.detect(img, 0.27)  # within the 12% tolerance: used as is
    with pytest.raises(DataError, match="microns per pixel is unknown"):
        detector.scale_for(None)


def test_checkpoints_that_are_not_mitosis_models_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not a mitosis model.*\\['0', '1'\\]"):
        MitosisDetector.from_checkpoint(window_checkpoint(tmp_path / "a.pt", classes=("0", "1")))
    with pytest.raises(CheckpointError, match="training mpp"):
        MitosisDetector.from_checkpoint(window_checkpoint(tmp_path / "b.pt", mpp=None))
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        MitosisDetector.from_checkpoint(tmp_path / "c.pt")


def test_detector_checkpoint_keeps_settings_and_threshold(tmp_path):
    ckpt = Checkpoint.read(window_checkpoint(tmp_path / "w.pt"))
    path = save_detector(tmp_path / "d.pt", ckpt, DetectConfig(nms_um=2.5), 0.7, chosen_on="val crops")
    det = MitosisDetector.from_checkpoint(path)
    assert det.threshold == 0.7 and det.cfg.nms_um == 2.5 and det.mpp == 0.25 and det.window_px == 24
    assert Checkpoint.read(path).get("mitosis")["threshold_chosen_on"] == "val crops"


def test_detect_images_writes_csv_geojson_and_summary(tmp_path, monkeypatch):
    from PIL import Image

    from histoflow.predict.mitosis_outputs import detect_images

    ckpt = Checkpoint.read(window_checkpoint(tmp_path / "w.pt"))
    det = MitosisDetector.from_checkpoint(save_detector(tmp_path / "d.pt", ckpt, DetectConfig(nms_um=3.0), 0.5, "x"))
    monkeypatch.setattr(det, "score_windows", centre_darkness)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(disks()).save(folder / "a.png")
    Image.fromarray(disks(centres=())).save(folder / "empty.png")  # no mitosis: fine, zero rows
    summary = detect_images(det, [folder], tmp_path / "out", quiet=True)
    table = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert summary["mitoses"] == 3 and len(table) == 3 and set(table["image"]) == {str(folder / "a.png")}
    assert [p["mitoses"] for p in summary["per_image"]] == [3, 0]
    geo = json.loads((tmp_path / "out" / "detections.geojson").read_text())
    assert len(geo["features"]) == 3 and geo["features"][0]["geometry"]["type"] == "Point"
    assert geo["features"][0]["properties"]["classification"]["name"] == "Mitosis"
    with pytest.raises(DataError, match="no such file"):
        detect_images(det, [tmp_path / "missing"], tmp_path / "o2", quiet=True)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not an image file"):
        detect_images(det, [tmp_path / "notes.txt"], tmp_path / "o3", quiet=True)
    bare = MitosisDetector.from_checkpoint(tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="no detection threshold"):
        detect_images(bare, [folder], tmp_path / "o4", quiet=True)


def test_atypia_checkpoint_adds_p_atypical_and_a_wrong_one_is_refused(tmp_path, monkeypatch):
    from PIL import Image

    from histoflow.predict.mitosis_outputs import detect_images

    ckpt = Checkpoint.read(window_checkpoint(tmp_path / "w.pt"))
    det = MitosisDetector.from_checkpoint(save_detector(tmp_path / "d.pt", ckpt, DetectConfig(nms_um=3.0), 0.5, "x"))
    monkeypatch.setattr(det, "score_windows", centre_darkness)
    Image.fromarray(disks()).save(tmp_path / "a.png")
    atypia = window_checkpoint(tmp_path / "atyp.pt", classes=("normal", "atypical"), image_px=32)
    detect_images(det, [tmp_path / "a.png"], tmp_path / "out", atypia_checkpoint=atypia, quiet=True)
    table = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert len(table) == 3 and table["p_atypical"].between(0, 1).all()
    with pytest.raises(CheckpointError, match="not an atypia model"):
        detect_images(det, [tmp_path / "a.png"], tmp_path / "o2", atypia_checkpoint=tmp_path / "w.pt", quiet=True)
