"""Operating points and bootstrap confidence intervals for a binary classifier.

A pathologist chooses a threshold, not an AUC: the SLN study's headline is "100% sensitivity
while 40% of negative slides are identified as such". This module answers that question for
any run: at sensitivity 1.0 / 0.99 / 0.95, at Youden's J and at a user-given threshold, what
are specificity, PPV, NPV and the fraction of negatives spared?

Every figure comes from scikit-learn (roc_curve, recall/precision scores); the bootstrap is
written here because scikit-learn and scipy have no patient-grouped bootstrap.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn import metrics as skm

log = logging.getLogger(__name__)

DEFAULT_SENSITIVITIES = (1.0, 0.99, 0.95)
ROC_GRID = 101  # false-positive rates the ROC band is given at (0, 0.01, ..., 1)


def _r(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


def rates_at(y: np.ndarray, p_pos: np.ndarray, threshold: float) -> dict:
    """Sensitivity, specificity, PPV, NPV and spared fractions when `p_pos >= threshold` is positive.

    `negatives_spared`: the fraction of truly negative cases called negative (= specificity; the
    SLN "negative slides identified as such"). `workload_spared`: the fraction of all cases called
    negative, i.e. that a pathologist would not need to review first. A rate with no cases to
    count (e.g. PPV when nothing is called positive) is None, never NaN.
    """
    y = np.asarray(y).astype(int)
    pred = (np.asarray(p_pos) >= threshold).astype(int)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    called_pos, called_neg = int(pred.sum()), int((pred == 0).sum())
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    sens = skm.recall_score(y, pred, pos_label=1, zero_division=0) if n_pos else None
    spec = skm.recall_score(y, pred, pos_label=0, zero_division=0) if n_neg else None
    ppv = skm.precision_score(y, pred, pos_label=1, zero_division=0) if called_pos else None
    npv = skm.precision_score(y, pred, pos_label=0, zero_division=0) if called_neg else None
    return {
        "threshold": float(threshold),
        "sensitivity": _r(sens),
        "specificity": _r(spec),
        "ppv": _r(ppv),
        "npv": _r(npv),
        "negatives_spared": _r(spec),
        "workload_spared": _r(called_neg / len(y)) if len(y) else None,
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "tn": int(tn),
    }


def threshold_for_sensitivity(y: np.ndarray, p_pos: np.ndarray, sensitivity: float) -> float:
    """The highest threshold reaching at least `sensitivity` (so specificity is as high as it can be)."""
    fpr, tpr, thr = skm.roc_curve(y, p_pos, drop_intermediate=False)
    ok = np.flatnonzero(tpr >= sensitivity - 1e-12)
    # roc_curve's first threshold is +inf (nothing positive); a finite one is what a user can set
    return float(min(thr[ok[0]], 1.0)) if np.isfinite(thr[ok[0]]) else 1.0


def youden_threshold(y: np.ndarray, p_pos: np.ndarray) -> float:
    fpr, tpr, thr = skm.roc_curve(y, p_pos)
    k = int(np.argmax(tpr - fpr))
    return float(min(thr[k], 1.0))


def operating_points(y, p_pos, sensitivities=DEFAULT_SENSITIVITIES, threshold: float | None = 0.5) -> dict:
    """{"points": [row, ...], "notes": [...]}: one row per operating point (see `rates_at`)."""
    y = np.asarray(y).astype(int)
    p_pos = np.asarray(p_pos, dtype=float)
    points: list[dict] = []
    notes: list[str] = []
    if len(y) == 0:
        return {"points": [], "notes": ["no predictions: no operating points"]}
    if len(np.unique(y)) < 2:
        notes.append(f"only class {int(y[0])} present: sensitivity-targeted thresholds and Youden's J are undefined")
    else:
        for s in sensitivities:
            points.append(
                {
                    "name": f"sensitivity {s:g}",
                    "target_sensitivity": s,
                    **rates_at(y, p_pos, threshold_for_sensitivity(y, p_pos, s)),
                }
            )
        points.append({"name": "Youden's J", **rates_at(y, p_pos, youden_threshold(y, p_pos))})
    if threshold is not None:
        points.append({"name": f"threshold {threshold:g}", **rates_at(y, p_pos, threshold)})
    return {"points": points, "notes": notes}


def _group_members(groups: np.ndarray) -> list[np.ndarray]:
    _, inverse = np.unique(groups, return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]


def _resample_indices(rng, n: int, members: list[np.ndarray] | None):
    if members is None:
        return rng.integers(0, n, n)
    # patient-grouped: draw whole patients, so correlated patches never pretend to be independent
    picked = rng.integers(0, len(members), len(members))
    return np.concatenate([members[g] for g in picked])


def bootstrap_ci(
    y,
    p_pos,
    thresholds: dict[str, float],
    groups=None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    group_name: str = "patient",
) -> dict:
    """Percentile bootstrap CIs for AUC and for sensitivity/specificity at each named threshold,
    and a pointwise band around the ROC curve (`roc_band`: sensitivity at each of ROC_GRID
    1 - specificity values, from the same resamples as the AUC interval).

    Thresholds stay fixed (chosen on the full data): the CI covers sampling variation of the
    evaluation set, not the optimism of choosing a threshold on it. Resamples with one class
    only are skipped for AUC and the band (and counted in `notes`).
    """
    y = np.asarray(y).astype(int)
    p_pos = np.asarray(p_pos, dtype=float)
    groups = None if groups is None else np.asarray(groups)
    out: dict = {"n_boot": n_boot, "level": level, "grouped_by": None, "seed": seed, "notes": []}
    if len(y) == 0:
        out["notes"].append("no predictions: no confidence intervals")
        return out
    if groups is not None:
        n_groups = len(np.unique(groups))
        if n_groups < 2:
            out["notes"].append(f"only {n_groups} {group_name} group: bootstrap over patches instead")
            groups = None
        else:
            out["n_groups"] = n_groups
    out["grouped_by"] = group_name if groups is not None else None
    members = _group_members(groups) if groups is not None else None
    rng = np.random.default_rng(seed)
    aucs: list[float] = []
    grid = np.linspace(0.0, 1.0, ROC_GRID)
    tprs: list[np.ndarray] = []
    sens: dict[str, list[float]] = {k: [] for k in thresholds}
    spec: dict[str, list[float]] = {k: [] for k in thresholds}
    skipped = 0
    for _ in range(n_boot):
        idx = _resample_indices(rng, len(y), members)
        yb, pb = y[idx], p_pos[idx]
        pos, neg = yb == 1, yb == 0
        if pos.any() and neg.any():
            fpr, tpr, _ = skm.roc_curve(yb, pb)
            aucs.append(skm.auc(fpr, tpr))  # = roc_auc_score, from the curve the band needs
            # a step curve: the sensitivity reached at or before each false-positive rate
            tprs.append(tpr[np.searchsorted(fpr, grid, side="right") - 1])
        else:
            skipped += 1
        for name, t in thresholds.items():
            called = pb >= t
            if pos.any():
                sens[name].append(called[pos].mean())
            if neg.any():
                spec[name].append((~called[neg]).mean())
    alpha = (1 - level) / 2

    def ci(values):
        if len(values) < max(20, n_boot // 10):  # too few usable resamples to call it an interval
            return None
        lo, hi = np.quantile(values, [alpha, 1 - alpha])
        return [_r(lo), _r(hi)]

    out["auc"] = ci(aucs)
    if out["auc"] is None:
        out["notes"].append("AUC confidence interval undefined: too few resamples hold both classes")
    elif skipped:
        out["notes"].append(f"{skipped} of {n_boot} resamples held one class only and were skipped for AUC")
    if out["auc"] is not None:
        lo, hi = np.quantile(np.stack(tprs), [alpha, 1 - alpha], axis=0)
        out["roc_band"] = {
            "fpr": grid.round(4).tolist(),
            "tpr_low": lo.round(4).tolist(),
            "tpr_high": hi.round(4).tolist(),
        }
    out["thresholds"] = {
        name: {"threshold": float(t), "sensitivity": ci(sens[name]), "specificity": ci(spec[name])}
        for name, t in thresholds.items()
    }
    return out
