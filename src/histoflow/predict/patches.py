"""Batched patch inference: a DataLoader decodes while the model runs."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from histoflow.core.progress import progress_bar
from histoflow.core.runtime import keep_freed_memory_in_heap
from histoflow.data.loading import make_loader
from histoflow.data.transforms import dihedral_views


def autocast_for(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return contextlib.nullcontext()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def predict_batches(
    model, loader, tta: bool = False, device: torch.device | None = None, progress: bool = False
) -> np.ndarray:
    """(N, num_classes) probabilities for every image the loader yields, in order."""
    device = device or default_device()
    keep_freed_memory_in_heap()  # see histoflow.core.runtime
    model.eval().to(device)
    model = model.to(memory_format=torch.channels_last)
    out = []
    with progress_bar(len(loader), "predicting", quiet=not progress) as bar:
        for x, _ in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with autocast_for(device):
                if tta:  # average probabilities over the 8 dihedral views
                    probs = torch.stack([model.probabilities(model(v)) for v in dihedral_views(x)]).mean(0)
                else:
                    probs = model.probabilities(model(x))
            out.append(probs.float().cpu())
            bar.advance()
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_classes), dtype=np.float32)


def predict_dataset(
    model,
    dataset,
    batch_size: int = 256,
    workers: int = 2,
    tta: bool = False,
    device: torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    loader = make_loader(dataset, batch_size, workers, persistent=False)
    return predict_batches(model, loader, tta=tta, device=device, progress=progress)
