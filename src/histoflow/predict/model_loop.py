"""The model stage of slide prediction: decoded tiles -> probabilities (and pooled features).

Reader threads (predict.pipeline) stay `prefetch` batches ahead of the model, so decoding and
inference overlap; the time the model waited for tiles is reported to show which one bounds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from histoflow.config.slides import SlidePredictConfig
from histoflow.core.progress import progress_bar
from histoflow.predict.pipeline import reader_threads, stream_batches


@dataclass
class ModelOutput:
    indices: np.ndarray  # positions in the source that were scored
    probs: np.ndarray  # (n, classes)
    features: np.ndarray | None  # (n, F) pooled backbone features when asked for
    errors: list[tuple[int, str]]
    model_s: float  # time spent in the model
    wait_s: float  # time the model waited for decoded tiles
    total_s: float


def device_of(cfg_device: str | None) -> torch.device:
    from histoflow.predict.patches import default_device

    return torch.device(cfg_device) if cfg_device else default_device()


@torch.inference_mode()
def run_model(
    model,
    source,
    tile_px: int,
    cfg: SlidePredictConfig,
    device: torch.device,
    want_features: bool = False,
    want_probs: bool = True,
    progress: bool = False,
    description: str = "tiles",
) -> ModelOutput:
    """Stream the source through the model; reader threads stay `prefetch` batches ahead."""
    from histoflow.data.transforms import dihedral_views
    from histoflow.predict.patches import autocast_for

    model = model.eval().to(device).to(memory_format=torch.channels_last)
    idx, probs, feats, errors = [], [], [], []
    model_s = wait_s = 0.0
    t0 = time.perf_counter()
    batches = stream_batches(source, tile_px, cfg.batch_size, reader_threads(cfg.workers, device), cfg.prefetch)
    try:
        with progress_bar(len(source), description, quiet=not progress, unit="tiles") as bar:
            while True:
                tw = time.perf_counter()
                batch = next(batches, None)
                wait_s += time.perf_counter() - tw
                if batch is None:
                    break
                errors += batch.errors
                bar.advance(len(batch.indices) + len(batch.errors))
                if not len(batch.indices):
                    continue
                tm = time.perf_counter()
                x = torch.from_numpy(batch.images).permute(0, 3, 1, 2)  # NHWC view -> NCHW, no copy
                x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                with autocast_for(device):
                    f = model.features(x)
                    if want_probs:
                        if cfg.tta:  # average over the 8 dihedral views (features stay the plain view's)
                            p = torch.stack([model.probabilities(model(v)) for v in dihedral_views(x)]).mean(0)
                        else:
                            p = model.probabilities(model.head(f))
                        probs.append(p.float().cpu().numpy())
                if want_features:
                    feats.append(f.float().cpu().numpy())
                idx.append(batch.indices)
                model_s += time.perf_counter() - tm
    finally:  # an error mid-stream: stop and join the reader threads before the caller closes the slides
        batches.close()
    n_cls = model.num_classes
    return ModelOutput(
        indices=np.concatenate(idx) if idx else np.zeros(0, np.int64),
        probs=np.concatenate(probs) if probs else np.zeros((0, n_cls), np.float32),
        features=(np.concatenate(feats) if feats else np.zeros((0, model.backbone.num_features), np.float32))
        if want_features
        else None,
        errors=errors,
        model_s=model_s,
        wait_s=wait_s,
        total_s=time.perf_counter() - t0,
    )
