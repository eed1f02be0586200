"""`detect-mitoses` on image files: detections.csv, QuPath GeoJSON points, a summary.

detections.csv  image,x,y,score,p_atypical (x, y in the image's pixels; p_atypical empty without
                an atypia checkpoint); only detections at or above the detector's threshold
detections.geojson  one QuPath point annotation per detection (class "Mitosis" or "Atypical
                mitosis" when P(atypical) >= 0.5), measurements score and p_atypical; the
                `image` property names the file (one collection for all images)
summary.json    per image: mitoses, area in mm^2 (when mpp is known), mitoses per mm^2; the
                threshold and where it was chosen
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.checkpoint import Checkpoint
from histoflow.core.errors import CheckpointError, DataError
from histoflow.core.images import is_image_file, read_image
from histoflow.core.io import atomic_path, atomic_write_bytes, atomic_write_json
from histoflow.core.progress import progress_bar
from histoflow.data.windows import cut_windows
from histoflow.predict.mitosis import MitosisDetector

log = logging.getLogger(__name__)
ATYPICAL = "atypical"


def image_files(inputs: list[Path]) -> list[Path]:
    """Image files named, and the image files inside named folders (sorted); others refused."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                raise DataError(f"{item}: folder holds no image files")
            files += found
        elif item.is_file() and is_image_file(item):
            files.append(item)
        elif item.exists():
            raise DataError(f"{item}: not an image file (PNG, JPEG, TIFF, BMP); whole slides go through the slide path")
        else:
            raise DataError(f"{item}: no such file or folder")
    return files


class AtypiaScorer:
    """P(atypical) of detections, from a normal-vs-atypical checkpoint (histoflow mitosis atypia-cv
    or any run whose positive class is `atypical`), on windows of its own size, mirrored at edges."""

    def __init__(self, path: str | Path, mpp: float) -> None:
        import torch

        ckpt = Checkpoint.read(path)
        if ckpt.positive_class != ATYPICAL:
            raise CheckpointError(
                f"{path}: not an atypia model (classes {ckpt.class_names}; expected 'atypical' positive)"
            )
        if ckpt.mpp is not None and abs(ckpt.mpp / mpp - 1) > 0.12:
            raise CheckpointError(f"{path}: trained at {ckpt.mpp:g} um/px, the detector at {mpp:g} um/px")
        self.model, self.ckpt = ckpt.model("cpu"), ckpt
        self.crop = ckpt.data_config.get("crop_px")
        self.torch = torch

    @property
    def window_px(self) -> int:
        """Side of the window each detection is scored on, at the detector's mpp."""
        return self.ckpt.image_px

    def __call__(self, rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        if not len(points):
            return np.zeros(0)
        windows, _ = cut_windows(rgb, points, self.ckpt.image_px, "reflect")
        return self.score_windows(windows)

    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        """P(atypical) of (n, 3, window_px, window_px) uint8 windows centred on detections."""
        if not len(windows):
            return np.zeros(0)
        if self.crop and self.crop < self.ckpt.image_px:
            start = (self.ckpt.image_px - self.crop) // 2
            windows = windows[:, :, start : start + self.crop, start : start + self.crop]
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(windows))
            return self.model.probabilities(self.model(x))[:, 1].numpy()


def point_feature(x: float, y: float, image: str, score: float, p_atypical: float | None) -> dict:
    atypical = p_atypical is not None and p_atypical >= 0.5
    measurements = {"score": float(score)} | ({} if p_atypical is None else {"p_atypical": float(p_atypical)})
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [round(float(x), 1), round(float(y), 1)]},
        "properties": {
            "objectType": "annotation",
            "name": image,
            "classification": {"name": "Atypical mitosis" if atypical else "Mitosis", "color": [220, 30, 30]},
            "measurements": measurements,
        },
    }


def detect_images(
    detector: MitosisDetector,
    inputs: list[Path],
    out: str | Path,
    mpp: float | None = None,
    resample: bool = False,
    atypia_checkpoint: str | Path | None = None,
    quiet: bool = False,
) -> dict:
    """Detect mitoses in image files/folders; write detections.csv, .geojson and summary.json."""
    import json

    out = Path(out)
    if detector.threshold is None:
        raise CheckpointError(
            f"{detector.ckpt.path}: no detection threshold (a bare window classifier): evaluate it with "
            f"`histoflow mitosis evaluate`, which writes detector.pt with the threshold chosen on validation"
        )
    files = image_files(inputs)
    mpp = detector.mpp if mpp is None else mpp
    detector.scale_for(mpp, resample)  # refuse a far-off resolution before any work
    atypia = AtypiaScorer(atypia_checkpoint, detector.mpp) if atypia_checkpoint else None
    rows, per_image, started = [], [], time.perf_counter()
    with progress_bar(len(files), "detecting mitoses", quiet=quiet, unit="images") as bar:
        for path in files:
            rgb = read_image(path)
            found = detector.detect(rgb, mpp, resample=resample)
            found = found[found["score"] >= detector.threshold]
            xy = found[["x", "y"]].to_numpy(float)
            p_atyp = atypia(rgb, xy) if atypia is not None else np.full(len(found), np.nan)
            for (x, y), score, pa in zip(xy, found["score"], p_atyp):
                rows.append({"image": str(path), "x": x, "y": y, "score": float(score), "p_atypical": pa})
            area = rgb.shape[0] * rgb.shape[1] * mpp * mpp / 1e6
            per_image.append(
                {"image": str(path), "mitoses": len(found), "area_mm2": round(area, 5),
                 "per_mm2": round(len(found) / area, 3) if area else None}
            )  # fmt: skip
            bar.advance()
    table = pd.DataFrame(rows, columns=["image", "x", "y", "score", "p_atypical"])
    with atomic_path(out / "detections.csv") as tmp:
        table.to_csv(tmp, index=False)
    features = [
        point_feature(r.x, r.y, r.image, r.score, None if np.isnan(r.p_atypical) else r.p_atypical)
        for r in table.itertuples(index=False)
    ]
    atomic_write_bytes(
        out / "detections.geojson", json.dumps({"type": "FeatureCollection", "features": features}).encode()
    )
    section = detector.ckpt.get("mitosis") or {}
    summary = {
        "images": len(files),
        "mitoses": int(len(table)),
        "threshold": detector.threshold,
        "threshold_chosen_on": section.get("threshold_chosen_on"),
        "mpp": mpp,
        "seconds": round(time.perf_counter() - started, 2),
        "per_image": per_image,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
