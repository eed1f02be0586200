"""Tiny runs on real PCam patches, shared by the reliability tests."""

from __future__ import annotations

import torch

from histoflow.checkpoint import Checkpoint
from tests.helpers import TINY_RUN, tiny_config

TINY = [*TINY_RUN, "model.dropout=0.2"]


def tiny(*extra, data=None):
    return tiny_config(*extra, data=data, base=TINY)


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
