"""Slide-level scores from tile probabilities: max, mean, top-k mean, fraction above a threshold.

A slide score is one number per slide for the positive class. Which rule is right depends on
the question: `max` answers "is there any tumour" but is hostage to one false-positive tile;
`topk_mean` (the usual compromise) averages the k most suspicious tiles; `mean` estimates
burden; `fraction` is the share of tissue called positive. The learned aggregator (attention
MIL, histoflow.mil) is a hook of predict.slide (`aggregator=`) because it needs tile features,
not just probabilities.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from histoflow.config.slides import AGGREGATE_METHODS as METHODS
from histoflow.config.slides import AggregateConfig
from histoflow.core.errors import ConfigError

__all__ = ["METHODS", "TileAggregator", "aggregate", "all_scores"]


class TileAggregator(Protocol):
    """A learned slide score from tile features (histoflow.mil.apply.MilAggregator is one).

    predict never imports its implementations: the caller (mil, the CLI) builds one and passes
    it to predict_slides(aggregator=...), so the layers above predict stay above it.
    """

    name: str  # its score's name in slide.json `scores` (and `score_method`)
    report_key: str  # slide.json key of its extra outputs
    label: str  # what its weights are called in the attention picture

    def check_backbone(self, checkpoint_fingerprint: str) -> None:
        """Raise when it was trained on features of another patch checkpoint."""

    def __call__(self, features: np.ndarray) -> dict:
        """{"score": float, "attention": (n,) array, "report": dict for slide.json}."""


def aggregate(probs: np.ndarray, method: str, k: int = 10, threshold: float = 0.5) -> float | None:
    """One slide score from per-tile probabilities of the positive class; None for no tiles
    (an empty slide has no score, and 0 would read as 'confidently negative')."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    p = p[np.isfinite(p)]
    if method not in METHODS:
        raise ConfigError(f"aggregation method must be one of {METHODS}, got {method!r}")
    if p.size == 0:
        return None
    if method == "max":
        return float(p.max())
    if method == "mean":
        return float(p.mean())
    if method == "topk_mean":
        k = min(k, p.size)
        return float(np.partition(p, p.size - k)[p.size - k :].mean())
    return float((p >= threshold).mean())


def all_scores(probs: np.ndarray, cfg: AggregateConfig) -> dict[str, float | None]:
    """Every rule at once (cheap), so a user can compare them without re-running the model."""
    return {m: aggregate(probs, m, cfg.k, cfg.threshold) for m in METHODS}
