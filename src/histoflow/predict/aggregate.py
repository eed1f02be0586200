"""Slide-level scores from tile probabilities: max, mean, top-k mean, fraction above a threshold.

A slide score is one number per slide for the positive class. Which rule is right depends on
the question: `max` answers "is there any tumour" but is hostage to one false-positive tile;
`topk_mean` (the usual compromise) averages the k most suspicious tiles; `mean` estimates
burden; `fraction` is the share of tissue called positive. The learned aggregator (attention
MIL, histoflow.mil) is applied in predict.slide because it needs tile features, not just
probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histoflow.core.errors import ConfigError

METHODS = ("max", "mean", "topk_mean", "fraction")


@dataclass(frozen=True)
class AggregateConfig:
    method: str = "topk_mean"   # the score reported as `score` in slide.json
    k: int = 10                  # top-k mean: tiles averaged (fewer when the slide has fewer)
    threshold: float = 0.5       # fraction above threshold; also the GeoJSON threshold

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"aggregation method must be one of {METHODS}, got {self.method!r}")
        if self.k < 1:
            raise ConfigError(f"top-k needs k >= 1, got {self.k}")
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")


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
        return float(np.partition(p, p.size - k)[p.size - k:].mean())
    return float((p >= threshold).mean())


def all_scores(probs: np.ndarray, cfg: AggregateConfig) -> dict[str, float | None]:
    """Every rule at once (cheap), so a user can compare them without re-running the model."""
    return {m: aggregate(probs, m, cfg.k, cfg.threshold) for m in METHODS}
