"""Detection evaluated on held-out AMi-Br crops, beside the baselines that keep it honest.

Every AMi-Br crop has a mitosis at its centre, so "one detection at the centre of every crop"
scores almost perfectly: the `centre` baseline is reported beside the model to show what
position alone is worth on these crops. The model cannot use position: it sees only windows
cut around proposals, wholly inside the crop's valid area, and proposals come from a
translation-equivariant filter, so moving the crop's content moves the detections with it.
The `haematoxylin` baseline scores the same proposals by their darkness alone (no learning),
the floor a classifier must clear.

Only the part of a crop where windows fit is evaluated; mitoses outside it are `ignore` points
(detections near them count neither way). The threshold is chosen on the validation crops'
pooled F1 and applied to the test crops.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.config.mitosis import DetectConfig
from histoflow.core.errors import DataError
from histoflow.core.images import read_image
from histoflow.core.io import atomic_path, atomic_write_json
from histoflow.core.progress import progress_bar
from histoflow.data.windows import window_region
from histoflow.evaluate.detection import (
    ImageDetections,
    bootstrap_detection,
    choose_threshold,
    classify_detections,
    detection_metrics,
)
from histoflow.predict.mitosis import MitosisDetector, nms, save_detector
from histoflow.preprocess.nuclei import nucleus_candidates

log = logging.getLogger(__name__)


def read_split(windows_dir: Path, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The crops of one split and every mitosis in them (from `histoflow mitosis windows`)."""
    crops_csv, points_csv = windows_dir / "crops.csv", windows_dir / "points.csv"
    for path in (crops_csv, points_csv):
        if not path.is_file():
            raise DataError(f"{path}: missing; {windows_dir} is not a `histoflow mitosis windows` output")
    crops = pd.read_csv(crops_csv)
    crops = crops[crops["split"] == split].reset_index(drop=True)
    if not len(crops):
        raise DataError(f"{crops_csv}: no crops in split {split!r}")
    points = pd.read_csv(points_csv)
    return crops, points[points["image"].isin(crops["image"])]


def _box(crop) -> tuple[int, int, int, int]:
    return int(crop.x0), int(crop.y0), int(crop.x1), int(crop.y1)


def run_split(detector: MitosisDetector, windows_dir: Path, split: str, quiet: bool = False) -> dict:
    """Detections of the model and both baselines on every crop of `split`, as ImageDetections."""
    crops, points = read_split(windows_dir, split)
    cfg = detector.cfg
    out: dict[str, list[ImageDetections]] = {"model": [], "centre": [], "haematoxylin": []}
    seconds = 0.0
    with progress_bar(len(crops), f"detecting ({split})", quiet=quiet, unit="crops") as bar:
        for crop in crops.itertuples(index=False):
            rgb = read_image(crop.path)
            mpp, box = float(crop.mpp), _box(crop)
            mine = points[points["image"] == crop.image]
            gt = mine.loc[mine["evaluated"], ["x", "y"]].to_numpy(float)
            ignore = mine.loc[~mine["evaluated"], ["x", "y"]].to_numpy(float)
            radius = cfg.match_radius_um / mpp
            started = time.perf_counter()
            found = detector.detect(rgb, mpp, box)
            seconds += time.perf_counter() - started
            out["model"].append(
                ImageDetections(crop.image, gt, found[["x", "y"]].to_numpy(float), found["score"], radius, ignore)
            )
            h, w = rgb.shape[:2]
            out["centre"].append(ImageDetections(crop.image, gt, [[w // 2, h // 2]], [1.0], radius, ignore))
            x0, y0, x1, y1 = window_region(box, detector.window_px) if cfg.border == "inside" else box
            mask = np.zeros(rgb.shape[:2], dtype=bool)
            mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
            cand = nucleus_candidates(rgb, mpp, cfg.candidates, mask=mask)
            keep = nms(cand[:, :2], cand[:, 2], cfg.nms_um / mpp)
            out["haematoxylin"].append(ImageDetections(crop.image, gt, cand[keep, :2], cand[keep, 2], radius, ignore))
            bar.advance()
    windows = sum(len(it.det) for it in out["model"])
    return {"items": out, "crops": crops, "seconds": seconds, "detections": windows}


def evaluate_detector(
    checkpoint: str | Path,
    windows_dir: str | Path,
    out: str | Path,
    cfg: DetectConfig | None = None,
    quiet: bool = False,
    pictures: int = 24,
    n_boot: int = 1000,
) -> dict:
    """Threshold on the validation crops, metrics on the test crops (model and baselines);
    writes metrics.json, detections_<split>.csv, a picture of test detections and detector.pt."""
    windows_dir, out = Path(windows_dir), Path(out)
    detector = MitosisDetector.from_checkpoint(checkpoint, cfg)
    results: dict = {"checkpoint": str(checkpoint), "detect": detector.cfg.model_dump(mode="json"), "methods": {}}
    runs = {split: run_split(detector, windows_dir, split, quiet) for split in ("val", "test")}
    slides = runs["test"]["crops"]["slide"].to_numpy()
    for method in ("model", "haematoxylin", "centre"):
        chosen = choose_threshold(runs["val"]["items"][method])
        test_items = runs["test"]["items"][method]
        results["methods"][method] = {
            "threshold": chosen["threshold"],
            "val": detection_metrics(runs["val"]["items"][method], chosen["threshold"]),
            "test": detection_metrics(test_items, chosen["threshold"]),
            "test_ci95": bootstrap_detection(test_items, slides, chosen["threshold"], n_boot=n_boot),
        }
    test = runs["test"]
    results["timing"] = {
        "test_crops": len(test["crops"]),
        "seconds": round(test["seconds"], 3),
        "crops_per_second": round(len(test["crops"]) / max(test["seconds"], 1e-9), 1),
    }
    threshold = results["methods"]["model"]["threshold"]
    for split, run in runs.items():
        write_detections(run["items"]["model"], threshold, out / f"detections_{split}.csv")
    results["detector"] = str(
        save_detector(
            out / "detector.pt",
            detector.ckpt,
            detector.cfg,
            threshold,
            chosen_on=f"{windows_dir} val crops (pooled F1)",
            metrics={k: v["test"] for k, v in results["methods"].items()},
        )
    )
    if pictures:
        from histoflow.evaluate.mitosis_pictures import detection_montage

        drawn = pick_crops(test["items"]["model"], threshold, pictures)
        paths = dict(zip(test["crops"]["image"], test["crops"]["path"]))
        detection_montage(
            [(paths[it.image], it) for it in drawn],
            threshold,
            out / "report" / "detections_test.png",
            detector.window_px,
        )
    atomic_write_json(out / "metrics.json", results)
    return results


def write_detections(items: list[ImageDetections], threshold: float, path: Path) -> Path:
    """image,x,y,score,status (tp/fp/ignored at the threshold; below it: below) and missed points."""
    rows = []
    for item in items:
        result = classify_detections(item, threshold)
        status = np.full(len(item.det), "below", dtype=object)
        status[result["kept"]] = result["status"]
        for (x, y), score, s in zip(item.det, item.scores, status):
            rows.append({"image": item.image, "x": x, "y": y, "score": round(float(score), 5), "status": s})
        for i in result["missed"]:
            rows.append({"image": item.image, "x": item.gt[i, 0], "y": item.gt[i, 1], "score": None, "status": "fn"})
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=["image", "x", "y", "score", "status"]).to_csv(tmp, index=False)
    return path


def pick_crops(items: list[ImageDetections], threshold: float, n: int) -> list[ImageDetections]:
    """Crops to draw: those with errors first (FP or FN), then the rest, in a fixed order."""
    scored = []
    for item in items:
        result = classify_detections(item, threshold)
        errors = int((result["status"] == "fp").sum()) + len(result["missed"])
        scored.append((-errors, item.image, item))
    scored.sort(key=lambda t: (t[0], t[1]))
    wrong = [t[2] for t in scored if t[0] < 0][: (n + 1) // 2]
    right = [t[2] for t in scored if t[0] == 0][: n - len(wrong)]
    return wrong + right
