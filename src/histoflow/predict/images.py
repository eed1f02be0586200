"""Probabilities for images in memory (arrays) or on disk (paths), without writing anything.

For notebooks and services: `predict_images(checkpoint, images)` prepares every image exactly as
the checkpoint's training images were (size, stain normaliser, centre crop; see
histoflow.data.datasets.checkpoint_preparation) and returns an (N, num_classes) array whose
columns follow `Checkpoint.class_names`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from histoflow.checkpoint import Checkpoint, load_checkpoint
from histoflow.core.errors import DataError
from histoflow.core.images import read_image
from histoflow.data.datasets import checkpoint_preparation, prepare_image
from histoflow.predict.patches import predict_batches


def _as_images(images: Any) -> list:
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return list(images)
        raise DataError(f"images: expected HxWx3 or NxHxWx3 uint8, got an array of shape {images.shape}")
    if isinstance(images, (str, Path)):
        return [images]
    return list(images)


def _load(item: Any, k: int, non_rgb: str) -> tuple[np.ndarray, str]:
    if isinstance(item, (str, Path)):
        return read_image(str(item), non_rgb), str(item)
    arr = np.asarray(item)
    where = f"images[{k}]"
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(f"{where}: expected an HxWx3 RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0 + 1e-6:
            arr = np.round(arr * 255.0).astype(np.uint8)  # 0-1 floats, as many libraries hand them over
        else:
            raise DataError(f"{where}: expected uint8 (0-255) or float (0-1) pixels, got {arr.dtype}")
    return arr, where


def predict_images(
    checkpoint: str | Path | Checkpoint,
    images: Any,
    tta: bool = False,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> np.ndarray:
    """(N, num_classes) probabilities for `images`: an HxWx3 / NxHxWx3 uint8 array, a list of
    arrays, or image paths (mixed freely). `checkpoint`: a best.pt path or a `Checkpoint`."""
    if isinstance(checkpoint, Checkpoint):
        ckpt, model = checkpoint, checkpoint.model()
    else:
        model, ckpt = load_checkpoint(checkpoint)
    prep = checkpoint_preparation(ckpt)
    items = _as_images(images)
    if not items:
        return np.zeros((0, len(ckpt.class_names)), np.float32)
    prepared = []
    for k, item in enumerate(items):
        img, where = _load(item, k, prep["non_rgb"])
        prepared.append(
            prepare_image(img, prep["image_px"], prep["size_policy"], prep["preprocess"], prep["crop_px"], where)
        )
    batches = [
        (torch.from_numpy(np.stack(prepared[i : i + batch_size])).permute(0, 3, 1, 2), None)
        for i in range(0, len(prepared), batch_size)
    ]
    return predict_batches(model, batches, tta=tta, device=device)
