"""Tiny runs on real PCam patches, shared by the reliability tests."""

from __future__ import annotations

import torch

from histoflow.checkpoint import Checkpoint
from histoflow.config import load_config
from tests.conftest import need_data

TINY = [
    "data.max_per_split=48",
    "data.image_px=32",
    "model.params={widths: [8, 16], depth: 1}",
    "model.dropout=0.2",
    "train.epochs=2",
    "train.batch_size=16",
    "data.num_workers=0",
    "normalize.kind=imagenet",
    "train.optimizer.lr=0.01",
]


def tiny(*extra, data=None):
    return load_config(None, [f"data.path={data or need_data('pcam')}", *TINY, *extra])


def weights(run_dir, name="last.pt") -> dict:
    return Checkpoint.read(run_dir / "checkpoints" / name).state_dict()


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


TIMING = {"seconds", "train_seconds", "environment", "images_per_second"}


def without_timing(value):
    """metrics.json without wall-clock figures (the only thing two identical runs differ in)."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value
