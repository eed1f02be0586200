"""Detection evaluated on crops: threshold from val, metrics on test, the baselines, outputs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from histoflow.core.errors import DataError
from histoflow.evaluate.mitosis import evaluate_detector
from histoflow.predict.mitosis import MitosisDetector
from tests.mitosis.synthetic import centre_darkness, disks
from tests.mitosis.test_detector import window_checkpoint

# per crop: the mitoses (centre first) and one dark non-mitosis disk the stand-in scorer also likes
CROPS = {
    "v1.png": ("val", [(64, 64), (40, 90)], (95, 40)),
    "v2.png": ("val", [(64, 64)], (35, 35)),
    "t1.png": ("test", [(64, 64), (90, 90)], (30, 40)),
    "t2.png": ("test", [(64, 64)], None),
}


def fake_windows_dir(root):
    crops, points = [], []
    for name, (split, mitoses, other) in CROPS.items():
        centres = mitoses + ([other] if other else [])
        img = disks(centres=centres, radius=7)
        if other:  # the non-mitosis is paler: a lower score than every mitosis
            import cv2

            cv2.circle(img, other, 7, (150, 120, 170), -1)
        Image.fromarray(img).save(root / name)
        crops.append({"image": name, "path": str(root / name), "slide": name, "split": split, "mpp": 0.25,
                      "x0": 0, "y0": 0, "x1": 128, "y1": 128})  # fmt: skip
        for i, (x, y) in enumerate(mitoses):
            points.append({"image": name, "x": x, "y": y, "label": "normal", "centre": i == 0, "evaluated": True})
    points.append({"image": "t2.png", "x": 3, "y": 3, "label": "normal", "centre": False, "evaluated": False})
    pd.DataFrame(crops).to_csv(root / "crops.csv", index=False)
    pd.DataFrame(points).to_csv(root / "points.csv", index=False)
    return root


def test_threshold_from_val_metrics_on_test_and_the_baselines(tmp_path, monkeypatch):
    monkeypatch.setattr(MitosisDetector, "score_windows", lambda self, w: centre_darkness(w))
    windows = fake_windows_dir(tmp_path)
    ckpt = window_checkpoint(tmp_path / "w.pt")
    results = evaluate_detector(ckpt, windows, tmp_path / "eval", quiet=True, pictures=4)
    model, centre = results["methods"]["model"], results["methods"]["centre"]
    # the model finds every mitosis and rejects the paler disks at the threshold chosen on val
    assert (model["test"]["tp"], model["test"]["fp"], model["test"]["fn"]) == (3, 0, 0)
    assert model["test"]["ap"] == pytest.approx(1.0)
    # the centre baseline finds the centre mitosis of every crop and misses the others
    assert (centre["test"]["tp"], centre["test"]["fp"], centre["test"]["fn"]) == (2, 0, 1)
    hema = results["methods"]["haematoxylin"]["test"]  # the darkest blobs: every dark disk
    assert (hema["tp"], hema["fn"]) == (3, 0) and hema["ap"] is not None
    assert results["methods"]["model"]["test"]["ignored_points"] == 1
    saved = MitosisDetector.from_checkpoint(tmp_path / "eval" / "detector.pt")
    assert saved.threshold == pytest.approx(model["threshold"])
    table = pd.read_csv(tmp_path / "eval" / "detections_test.csv")
    assert set(table["status"]) <= {"tp", "fp", "fn", "below", "ignored"} and (table["status"] == "tp").sum() == 3
    assert (tmp_path / "eval" / "report" / "detections_test.png").is_file()
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["timing"]["test_crops"] == 2


def test_a_folder_that_is_not_a_window_dataset_is_refused(tmp_path):
    with pytest.raises(DataError, match="not a `histoflow mitosis windows` output"):
        evaluate_detector(window_checkpoint(tmp_path / "w.pt"), tmp_path, tmp_path / "eval", quiet=True)
