"""Point-detection metrics as the MIDOG challenges compute them.

A detection is a true positive when it is paired with a ground-truth point within `radius`
(MIDOG: 7.5 um, about 30 px at 0.25 um/px), each point and each detection in at most one
pair; unpaired detections are false positives, unpaired points false negatives. Counts are
pooled over all images before precision, recall and F1 (MIDOG's "F1 over the whole set", not a
mean of per-image F1s). The detection threshold is chosen on validation images
(`choose_threshold`) and only then applied to test images.

Two pairings, each where it belongs:
- at one threshold, `match_points(method="hungarian")`: scipy's `linear_sum_assignment` on the
  distance matrix, which finds the largest one-to-one pairing (ties broken by smallest total
  distance). It never loses a pair to the order detections are visited in, so F1 measures the
  detector, not the matcher. This is what grand-challenge's evalutils `score_detection`, used by
  MIDOG, computes too.
- for the precision-recall curve and AP, `method="greedy"`: detections in decreasing score,
  each paired with its nearest unpaired point within the radius (scipy cKDTree) - the
  PASCAL VOC / COCO procedure, which gives one ranked list and so every threshold in one pass.

AP is the area under the precision envelope (all-point interpolation, VOC 2010+), with the
number of ground-truth points as the recall denominator, so points no detection reaches count
as misses. scikit-learn's `average_precision_score` cannot be used: it knows only scored items,
not the points a detector never proposed.

`ignore` points (e.g. mitoses too near a crop's border to be evaluated) are neither found nor
missed: a detection that pairs with no real point but lies within the radius of an ignore point
is dropped instead of counted as a false positive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from histoflow.core.errors import ConfigError, DataError

Method = Literal["hungarian", "greedy"]


@dataclass
class ImageDetections:
    """One image's ground truth and scored detections, in pixels, and its matching radius in pixels."""

    image: str
    gt: Any  # (N, 2) x, y: anything np.asarray takes; an array after construction
    det: Any  # (M, 2) x, y
    scores: Any  # (M,)
    radius_px: float
    ignore: Any = field(default_factory=lambda: np.zeros((0, 2)))

    def __post_init__(self) -> None:
        self.gt = np.asarray(self.gt, dtype=float).reshape(-1, 2)
        self.det = np.asarray(self.det, dtype=float).reshape(-1, 2)
        self.scores = np.asarray(self.scores, dtype=float).reshape(-1)
        self.ignore = np.asarray(self.ignore, dtype=float).reshape(-1, 2)
        if len(self.scores) != len(self.det):
            raise DataError(f"{self.image}: {len(self.det)} detections but {len(self.scores)} scores")
        if not self.radius_px > 0:
            raise ConfigError(f"{self.image}: matching radius must be > 0 px, got {self.radius_px}")


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return cdist(a, b) if len(a) and len(b) else np.zeros((len(a), len(b)))


def match_points(
    gt: np.ndarray, det: np.ndarray, radius: float, method: Method = "hungarian", scores: np.ndarray | None = None
) -> np.ndarray:
    """(K, 2) index pairs (gt index, detection index) of a one-to-one pairing within `radius`
    (a distance equal to the radius counts). `greedy` visits detections by decreasing `scores`."""
    gt = np.asarray(gt, dtype=float).reshape(-1, 2)
    det = np.asarray(det, dtype=float).reshape(-1, 2)
    dist = _distances(gt, det)
    close = dist <= radius
    if not close.any():
        return np.zeros((0, 2), dtype=int)
    if method == "hungarian":
        from scipy.optimize import linear_sum_assignment

        # pairs beyond the radius cost more than every allowed pair together: the assignment
        # then maximises the number of allowed pairs first, their total distance second
        big = radius * (min(dist.shape) + 1) + 1.0
        rows, cols = linear_sum_assignment(np.where(close, dist, big))
        keep = close[rows, cols]
        return np.stack([rows[keep], cols[keep]], axis=1).astype(int)
    if method == "greedy":
        order = np.argsort(-np.asarray(scores, dtype=float), kind="stable") if scores is not None else range(len(det))
        taken = np.zeros(len(gt), dtype=bool)
        pairs = []
        for j in order:
            candidates = np.flatnonzero(close[:, j] & ~taken)
            if len(candidates):
                i = candidates[np.argmin(dist[candidates, j])]
                taken[i] = True
                pairs.append((i, j))
        return np.array(pairs, dtype=int).reshape(-1, 2)
    raise ConfigError(f"matching method must be 'hungarian' or 'greedy', got {method!r}")


def classify_detections(item: ImageDetections, threshold: float, method: Method = "hungarian") -> dict:
    """Per detection at or above `threshold`: 'tp', 'fp' or 'ignored'; plus the missed gt indices."""
    kept = np.flatnonzero(item.scores >= threshold)
    pairs = match_points(item.gt, item.det[kept], item.radius_px, method, item.scores[kept])
    status = np.full(len(kept), "fp", dtype=object)
    status[pairs[:, 1]] = "tp"
    if len(item.ignore):
        near_ignore = (_distances(item.det[kept], item.ignore) <= item.radius_px).any(axis=1)
        status[(status == "fp") & near_ignore] = "ignored"
    missed = np.setdiff1d(np.arange(len(item.gt)), pairs[:, 0])
    return {"kept": kept, "status": status, "pairs": kept[pairs[:, 1]] if len(pairs) else kept[:0], "missed": missed}


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn), "precision": precision, "recall": recall, "f1": f1}


def counts_at(items: Iterable[ImageDetections], threshold: float, method: Method = "hungarian") -> dict:
    """Pooled TP/FP/FN, precision, recall and F1 when detections scoring >= `threshold` are kept."""
    tp = fp = fn = 0
    for item in items:
        result = classify_detections(item, threshold, method)
        tp += int((result["status"] == "tp").sum())
        fp += int((result["status"] == "fp").sum())
        fn += len(result["missed"])
    return {"threshold": float(threshold), **_prf(tp, fp, fn)}


def ranked_hits(items: Iterable[ImageDetections]) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, is_tp) of every non-ignored detection, greedy-matched per image, and the number of
    ground-truth points: everything a precision-recall curve needs."""
    all_scores, all_hits, n_gt = [], [], 0
    for item in items:
        result = classify_detections(item, -np.inf, "greedy")
        counted = result["status"] != "ignored"
        all_scores.append(item.scores[result["kept"]][counted])
        all_hits.append(result["status"][counted] == "tp")
        n_gt += len(item.gt)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    hits = np.concatenate(all_hits).astype(bool) if all_hits else np.zeros(0, dtype=bool)
    return scores, hits, n_gt


def precision_recall_curve(items: Iterable[ImageDetections]) -> dict:
    """Precision and recall after each detection in decreasing score (greedy pairing)."""
    scores, hits, n_gt = ranked_hits(items)
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    ranks = np.arange(1, len(order) + 1)
    recall = tp / n_gt if n_gt else np.zeros(len(order))
    return {"scores": scores[order], "precision": tp / ranks, "recall": recall, "n_gt": n_gt}


def _ap(scores: np.ndarray, hits: np.ndarray, n_gt: int) -> float | None:
    if not n_gt:
        return None
    if not len(scores):
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = np.concatenate([[0.0], tp / n_gt])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope))


def average_precision(items: Iterable[ImageDetections]) -> float | None:
    """Area under the precision envelope over recall (None without ground-truth points)."""
    return _ap(*ranked_hits(items))


def bootstrap_detection(
    items: list[ImageDetections], groups, threshold: float, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """Percentile-bootstrap CIs of pooled precision, recall, F1 and AP, resampling whole groups
    (slides: images of one slide are not independent); the threshold stays fixed.

    Per-image counts and ranked hits are computed once, so a resample only re-adds them; the
    resampling is written here because scipy.stats.bootstrap resamples items, not groups."""
    groups = np.asarray(groups)
    if len(groups) != len(items):
        raise DataError(f"{len(groups)} group labels for {len(items)} images")
    counts = np.array(
        [[counts_at([it], threshold)[k] for k in ("tp", "fp", "fn")] for it in items], dtype=float
    ).reshape(-1, 3)
    ranked = [ranked_hits([it]) for it in items]
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)] if len(items) else []
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"precision": [], "recall": [], "f1": [], "ap": []}
    for _ in range(n_boot if members else 0):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        tp, fp, fn = counts[idx].sum(axis=0)
        if tp + fp:
            draws["precision"].append(tp / (tp + fp))
        if tp + fn:
            draws["recall"].append(tp / (tp + fn))
            draws["f1"].append(2 * tp / (2 * tp + fp + fn))
        ap = _ap(
            np.concatenate([ranked[i][0] for i in idx]),
            np.concatenate([ranked[i][1] for i in idx]).astype(bool),
            int(sum(ranked[i][2] for i in idx)),
        )
        if ap is not None:
            draws["ap"].append(ap)
    alpha = (1 - level) / 2
    out: dict = {"n_boot": n_boot, "level": level, "groups": len(members)}
    for name, values in draws.items():
        out[name] = [float(v) for v in np.quantile(values, [alpha, 1 - alpha])] if len(values) >= 20 else None
    return out


def choose_threshold(
    items: list[ImageDetections], thresholds: Iterable[float] | None = None, method: Method = "hungarian"
) -> dict:
    """The threshold with the best pooled F1 on these (validation) images, with its counts.

    Candidate thresholds default to the distinct detection scores (at most 200 quantiles of
    them), so the choice is exact where it matters; ties go to the higher threshold."""
    if thresholds is None:
        scores = np.unique(np.concatenate([it.scores for it in items])) if items else np.zeros(0)
        if len(scores) > 200:
            scores = np.unique(np.quantile(scores, np.linspace(0, 1, 200)))
        thresholds = scores
    best: dict | None = None
    for t in sorted(thresholds, reverse=True):
        result = counts_at(items, float(t), method)
        if result["f1"] is not None and (best is None or result["f1"] > best["f1"]):
            best = result
    if best is None:
        raise DataError("cannot choose a detection threshold: the validation images hold no points and no detections")
    return best


def detection_metrics(items: list[ImageDetections], threshold: float) -> dict:
    """Everything a report shows for one split: counts, P/R/F1 at `threshold` (Hungarian) and AP."""
    return {
        **counts_at(items, threshold, "hungarian"),
        "greedy_f1": counts_at(items, threshold, "greedy")["f1"],
        "ap": average_precision(items),
        "images": len(items),
        "gt_points": int(sum(len(it.gt) for it in items)),
        "ignored_points": int(sum(len(it.ignore) for it in items)),
    }
