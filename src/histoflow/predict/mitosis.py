"""A mitosis detector: proposals in an image, a window classifier on each, non-maximum suppression.

Two proposal kinds, chosen by measurement (docs/mitosis.md):
- `candidates`: candidate nuclei from the haematoxylin channel (histoflow.preprocess.nuclei);
  the classifier scores one window per dark blob (MIDOG 2021's winner also detected candidates
  first, then classified them);
- `grid`: a window every `grid_stride_px` pixels, i.e. a dense heatmap of the same classifier,
  whose peaks (non-maximum suppression) are the detections.

The classifier is any histoflow checkpoint whose positive class is `mitosis`, trained on
windows centred on mitoses and on other nuclei (`histoflow mitosis windows` + `histoflow
train`). Its windows never cross the image's valid area (`border: inside`), or are mirrored
there (`reflect`). A detector checkpoint (`save_detector`) is that classifier plus a `mitosis`
section: the detection settings and the score threshold chosen on validation images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from histoflow.checkpoint import Checkpoint, save_checkpoint
from histoflow.config.mitosis import DetectConfig
from histoflow.core.errors import CheckpointError, ConfigError, DataError
from histoflow.data.windows import Box, cut_windows, valid_box, window_region
from histoflow.preprocess.nuclei import nucleus_candidates

log = logging.getLogger(__name__)
POSITIVE = "mitosis"
COLUMNS = ["x", "y", "score", "density"]


def nms(points: np.ndarray, scores: np.ndarray, radius_px: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression: in decreasing score, a point is dropped
    when a kept one lies within `radius_px`. Neighbours come from scipy's cKDTree; the greedy
    loop itself is the standard NMS, which neither scipy nor scikit-image offers for points."""
    from scipy.spatial import cKDTree

    if not len(points):
        return np.zeros(0, dtype=int)
    order = np.argsort(-scores, kind="stable")
    tree = cKDTree(points)
    removed = np.zeros(len(points), dtype=bool)
    keep = []
    for i in order:
        if removed[i]:
            continue
        keep.append(i)
        removed[tree.query_ball_point(points[i], r=radius_px)] = True
    return np.array(keep, dtype=int)


def grid_points(box: Box, stride_px: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    xs, ys = np.arange(x0, x1, stride_px), np.arange(y0, y1, stride_px)
    if not len(xs) or not len(ys):
        return np.zeros((0, 2))
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(float)


class MitosisDetector:
    """Scores windows around proposals of an RGB image with a `mitosis`-vs-other classifier."""

    def __init__(
        self,
        model,
        ckpt: Checkpoint,
        cfg: DetectConfig | None = None,
        threshold: float | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if ckpt.positive_class != POSITIVE:
            raise CheckpointError(
                f"{ckpt.path}: not a mitosis model (its classes are {ckpt.class_names}; a mitosis detector's "
                f"positive class is {POSITIVE!r}: train one on `histoflow mitosis windows` output)"
            )
        if ckpt.mpp is None:
            raise CheckpointError(f"{ckpt.path}: the checkpoint does not record its training mpp (set data.mpp)")
        self.model, self.ckpt = model, ckpt
        self.cfg = cfg or DetectConfig()
        self.threshold = threshold
        self.device = torch.device(device)
        self.window_px = ckpt.image_px
        self.mpp = float(ckpt.mpp)
        self.preprocess = None
        if ckpt.preprocess:
            from histoflow.preprocess.pipeline import Preprocessor

            pre = Preprocessor.from_state(ckpt.preprocess)
            self.preprocess = None if pre.is_identity else pre
        self.model.eval().to(self.device)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, cfg: DetectConfig | None = None, device: str | torch.device = "cpu"
    ) -> MitosisDetector:
        """A detector checkpoint (with its settings and threshold), or a bare mitosis window classifier."""
        ckpt = Checkpoint.read(path)
        section = ckpt.get("mitosis") or {}
        if cfg is None and section.get("detect"):
            cfg = DetectConfig.model_validate(section["detect"])
        return cls(ckpt.model(device), ckpt, cfg, section.get("threshold"), device)

    # -- scale ---------------------------------------------------------------------------------
    def scale_for(self, mpp: float | None, resample: bool = False) -> float:
        """The factor an image of `mpp` is resized by before detection (1.0 when close enough).

        Mitoses are judged by size and texture, so an image far from the training resolution is
        refused unless `resample` is asked for."""
        if mpp is None:
            raise DataError(
                "the image's microns per pixel is unknown; give it (--mpp) so windows match the training scale"
            )
        ratio = mpp / self.mpp
        if abs(ratio - 1.0) <= self.cfg.mpp_tolerance:
            return 1.0
        if not resample:
            raise DataError(
                f"image at {mpp:g} um/px is far from the detector's {self.mpp:g} um/px "
                f"(tolerance {self.cfg.mpp_tolerance:.0%}); pass --allow-resample to resize it first"
            )
        return ratio

    # -- scoring -------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        """P(mitosis) of uint8 Nx3xHxW windows."""
        out = []
        for start in range(0, len(windows), self.cfg.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(windows[start : start + self.cfg.batch_size])).to(self.device)
            out.append(self.model.probabilities(self.model(x))[:, 1].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def proposals(self, rgb: np.ndarray, mpp: float, box: Box) -> np.ndarray:
        """(N, 3) x, y, haematoxylin density of the places to score (density NaN for grid points)."""
        region = window_region(box, self.window_px) if self.cfg.border == "inside" else box
        x0, y0, x1, y1 = region
        if x1 <= x0 or y1 <= y0:
            return np.zeros((0, 3))
        if self.cfg.proposals == "grid":
            grid = grid_points(region, self.cfg.grid_stride_px)
            return np.concatenate([grid, np.full((len(grid), 1), np.nan)], axis=1)
        mask = np.zeros(rgb.shape[:2], dtype=bool)
        mask[y0:y1, x0:x1] = True
        return nucleus_candidates(rgb, mpp, self.cfg.candidates, mask=mask).astype(float)

    def prepare(self, rgb: np.ndarray, mpp: float, box: Box | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(proposals N x 3: x, y, density; their windows N x 3 x H x W) of an image already at
        the detector's scale: the CPU half of detection, separate so many images' windows can be
        scored in one batch."""
        if self.preprocess is not None:
            rgb = self.preprocess(rgb)
        box = box or valid_box(rgb)
        found = self.proposals(rgb, mpp, box)
        if not len(found):
            return np.zeros((0, 3)), np.zeros((0, 3, self.window_px, self.window_px), np.uint8)
        windows, kept = cut_windows(rgb, found[:, :2], self.window_px, self.cfg.border, box)
        return found[kept], windows

    def finish(self, found: np.ndarray, scores: np.ndarray, mpp: float, scale: float = 1.0) -> pd.DataFrame:
        """Non-maximum suppression of scored proposals; coordinates divided by `scale`."""
        if not len(found):
            return pd.DataFrame(columns=COLUMNS)
        keep = nms(found[:, :2], scores, self.cfg.nms_um / mpp)
        frame = pd.DataFrame(
            {"x": found[keep, 0] / scale, "y": found[keep, 1] / scale, "score": scores[keep], "density": found[keep, 2]}
        )
        return frame.reset_index(drop=True)

    def detect(
        self, rgb: np.ndarray, mpp: float | None = None, box: Box | None = None, resample: bool = False
    ) -> pd.DataFrame:
        """Every detection (x, y in `rgb`'s pixels, score, density) after non-maximum suppression,
        highest score first; the caller applies the threshold."""
        mpp = self.mpp if mpp is None else mpp
        scale = self.scale_for(mpp, resample)
        if scale != 1.0:
            import cv2

            size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            box = None if box is None else tuple(int(round(v * scale)) for v in box)  # type: ignore[assignment]
            mpp = mpp / scale
        found, windows = self.prepare(rgb, mpp, box)
        return self.finish(found, self.score_windows(windows), mpp, scale)


def save_detector(
    path: str | Path, ckpt: Checkpoint, cfg: DetectConfig, threshold: float, chosen_on: str, metrics: dict | None = None
) -> Path:
    """A detector checkpoint: the window classifier's weights and metadata plus a `mitosis`
    section (detection settings, the threshold and where it was chosen, validation metrics)."""
    if ckpt.positive_class != POSITIVE:
        raise CheckpointError(f"{ckpt.path}: not a mitosis window classifier (classes {ckpt.class_names})")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"detection threshold must be in [0, 1], got {threshold}")
    model = ckpt.model("cpu", apply_temperature=False)
    extra = {
        k: ckpt.get(k)
        for k in ("positive_class", "mpp", "tile_px", "epoch", "temperature", "temperature_fitted_on")
        if ckpt.get(k) is not None
    }
    extra["mitosis"] = {
        "detect": cfg.model_dump(mode="json"),
        "threshold": float(threshold),
        "threshold_chosen_on": chosen_on,
        "window_checkpoint": str(ckpt.path),
        "window_fingerprint": ckpt.fingerprint,
        "metrics": metrics or {},
    }
    return save_checkpoint(
        path,
        model,
        model_config=ckpt.model_config,
        class_names=ckpt.class_names,
        image_px=ckpt.image_px,
        run_config=ckpt.run_config,
        preprocess=ckpt.preprocess,
        extra=extra,
    )
