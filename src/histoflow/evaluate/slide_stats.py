"""The statistics under slide-level results: kappa, cut points, rank measures, grouped bootstrap.

Reported point estimates come from scikit-learn (roc_auc_score, cohen_kappa_score) so they match
what a reader would compute. The same quantities are also written here in numpy because the
bootstrap and the cut-point search evaluate them thousands of times per aggregation; tests check
the two agree. scikit-learn and scipy have no patient-grouped bootstrap, hence `resample`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

MAX_PASSES = 20  # coordinate-ascent passes over the cut points; it settles in a few


def r6(value) -> float | None:
    """A JSON-ready number: rounded, and None (never NaN) when undefined."""
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def qwk(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float | None:
    """Quadratic weighted kappa (= sklearn cohen_kappa_score(weights="quadratic") over all
    classes); None when undefined (every slide in one class, called that class)."""
    n = len(y)
    if n == 0:
        return None
    observed = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    i, j = np.indices((n_classes, n_classes))
    w = (i - j) ** 2
    expected = np.outer(observed.sum(1), observed.sum(0)) / n
    den = float((w * expected).sum())
    return None if den == 0 else 1.0 - float((w * observed).sum()) / den


def rank_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic (ties count half, as roc_auc_score); None with one class."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(y: np.ndarray, s: np.ndarray) -> float | None:
    """Spearman's rho (Pearson of average ranks, = scipy.stats.spearmanr); None when either is constant."""
    if len(y) < 2:
        return None
    a, b = rankdata(y), rankdata(s)
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return None if den == 0 else float((a * b).sum() / den)


def classify(scores: np.ndarray, cuts: Sequence[float]) -> np.ndarray:
    """Class index of each continuous score: the number of cut points at or below it."""
    return np.searchsorted(np.asarray(cuts, dtype=np.float64), scores, side="right").astype(np.int64)


def default_cuts(n_classes: int) -> list[float]:
    """k + 0.5 for k = 0..K-2: round the expected class index to the nearest class."""
    return [k + 0.5 for k in range(n_classes - 1)]


def qwk_cut_points(y: np.ndarray, s: np.ndarray, n_classes: int) -> list[float] | None:
    """Cut points that maximise QWK of classify(s, cuts) against y; None with fewer than 2 classes.

    Coordinate ascent from default_cuts: each cut in turn moves to the best candidate between its
    neighbours (midpoints of consecutive distinct scores, or just outside their range, which
    predicts a class for no slide); ties keep the candidate nearest the current cut. Passes
    repeat until nothing moves. Deterministic, and at worst as good as the default cuts.
    """
    y = np.asarray(y, dtype=np.int64)
    s = np.asarray(s, dtype=np.float64)
    cuts = default_cuts(n_classes)
    if len(np.unique(y)) < 2:  # one class: kappa is 0 or undefined whatever the cuts
        return None
    u = np.unique(s)
    candidates = np.concatenate([[u[0] - 0.5], (u[:-1] + u[1:]) / 2, [u[-1] + 0.5]])
    candidates = np.union1d(candidates, cuts)
    best = qwk(y, classify(s, cuts), n_classes)
    best = -np.inf if best is None else best
    for _ in range(MAX_PASSES):
        moved = False
        for j in range(len(cuts)):
            lo = cuts[j - 1] if j else -np.inf
            hi = cuts[j + 1] if j + 1 < len(cuts) else np.inf
            here = cuts[j]
            for c in sorted(candidates[(candidates >= lo) & (candidates <= hi)], key=lambda c: abs(c - here)):
                trial = [*cuts[:j], float(c), *cuts[j + 1 :]]
                k = qwk(y, classify(s, trial), n_classes)
                if k is not None and k > best + 1e-12:
                    best, cuts, moved = k, trial, True
        if not moved:
            break
    return [float(c) for c in cuts]


def group_members(groups: np.ndarray | None, n: int) -> list[np.ndarray]:
    """Row indices of each group; every row its own group when `groups` is None."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def resample(rng: np.random.Generator, members: list[np.ndarray]) -> np.ndarray:
    """Row indices of one bootstrap resample drawing whole groups (patients) with replacement."""
    picked = rng.integers(0, len(members), len(members))
    return np.concatenate([members[g] for g in picked])


def bootstrap(
    stat: Callable[[np.ndarray], dict[str, float | None]],
    members: list[np.ndarray],
    n_boot: int,
    seed: int,
    level: float = 0.95,
) -> tuple[dict[str, list[float | None] | None], dict[str, int]]:
    """Percentile CIs of every statistic `stat(indices)` returns, over resamples of whole groups.

    The same seed draws the same resamples for every call, so the CIs of different aggregations
    over the same slides are paired. Undefined values in a resample (a one-class resample has no
    AUC) are skipped and counted; a statistic with fewer than max(20, n_boot / 10) usable
    resamples gets no interval (None). Returns (CIs, skipped counts).
    """
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    skipped: dict[str, int] = {}
    for _ in range(n_boot):
        for key, v in stat(resample(rng, members)).items():
            values.setdefault(key, [])
            if v is None or not np.isfinite(v):
                skipped[key] = skipped.get(key, 0) + 1
            else:
                values[key].append(v)
    alpha = (1 - level) / 2
    cis: dict[str, list[float | None] | None] = {}
    for key, vals in values.items():
        if len(vals) < max(20, n_boot // 10):
            cis[key] = None
        else:
            lo, hi = np.quantile(vals, [alpha, 1 - alpha])
            cis[key] = [r6(lo), r6(hi)]
    return cis, skipped
