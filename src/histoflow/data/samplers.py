"""Class imbalance: a class-balanced sampler and class weights for the loss."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(labels[labels >= 0], minlength=n_classes)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 (a class absent from training gets 0)."""
    counts = class_counts(labels, n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def balanced_sampler(
    labels: np.ndarray, n_classes: int, seed: int = 0, num_samples: int | None = None
) -> WeightedRandomSampler:
    """Draw each class equally often (with replacement), like a balanced epoch."""
    per_class = class_weights(labels, n_classes).numpy()
    weights = per_class[labels]
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        # torch's stub says Sequence[float]; the sampler takes a tensor (torch.as_tensor inside)
        torch.as_tensor(weights, dtype=torch.double),  # type: ignore[arg-type]
        num_samples or len(labels),
        replacement=True,
        generator=generator,
    )
