"""CLAHE (contrast-limited adaptive histogram equalisation) with OpenCV.

Two modes: `lab` equalises only the lightness of CIELAB, so contrast improves without
shifting hue (the usual choice for H&E); `rgb` equalises each channel independently, which
also evens out colour casts but can change the stain colours.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from histoflow.core.errors import ConfigError, DataError

CLAHE_MODES = ("lab", "rgb")


def _check(clip_limit: float, grid_px: int, mode: str) -> None:
    if not clip_limit > 0:
        raise ConfigError(f"preprocess.clahe.clip_limit must be > 0, got {clip_limit}")
    if int(grid_px) < 1:
        raise ConfigError(f"preprocess.clahe.grid must be >= 1, got {grid_px}")
    if mode not in CLAHE_MODES:
        raise ConfigError(f"preprocess.clahe.mode must be one of {CLAHE_MODES}, got {mode!r}")


def clahe(image: np.ndarray, clip_limit: float = 2.0, grid: int = 8, mode: str = "lab") -> np.ndarray:
    """HxWx3 uint8 RGB -> HxWx3 uint8 RGB, equalised on a `grid` x `grid` tile layout."""
    _check(clip_limit, grid, mode)
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise DataError(f"CLAHE expects an HxWx3 uint8 RGB array, got {desc}")
    # a CLAHE object is cheap, and one per call keeps this safe in DataLoader workers and threads
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(grid), int(grid)))
    if mode == "lab":
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        lab[..., 0] = op.apply(np.ascontiguousarray(lab[..., 0]))
        return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return np.stack([op.apply(np.ascontiguousarray(image[..., c])) for c in range(3)], axis=-1)


apply_clahe = clahe  # the package-level name (`histoflow.preprocess.clahe` is this module)


class Clahe(torch.nn.Module):
    """CLAHE as a transform on a uint8 CHW tensor or NCHW batch (runs OpenCV on the CPU)."""

    def __init__(self, clip_limit: float = 2.0, grid: int = 8, mode: str = "lab") -> None:
        super().__init__()
        _check(clip_limit, grid, mode)
        self.clip_limit, self.grid, self.mode = float(clip_limit), int(grid), mode

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.ndim not in (3, 4):
            raise DataError(f"Clahe expects a uint8 3xHxW or Nx3xHxW tensor, got {getattr(img, 'shape', type(img))}")
        batch = img if img.ndim == 4 else img[None]
        arrays = batch.permute(0, 2, 3, 1).cpu().numpy()
        out = np.stack([clahe(a, self.clip_limit, self.grid, self.mode) for a in arrays])
        result = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(img.device)
        return result if img.ndim == 4 else result[0]

    def extra_repr(self) -> str:
        return f"clip_limit={self.clip_limit}, grid={self.grid}, mode={self.mode!r}"
