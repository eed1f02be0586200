"""Classification metrics from scikit-learn, with undefined values said, not hidden.

A single-class evaluation set has no ROC AUC: the value is null and `notes` says why, instead
of a NaN that looks like a number in a table.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def _round(v):
    return None if v is None else round(float(v), 6)


def binary_metrics(y: np.ndarray, p_pos: np.ndarray, threshold: float = 0.5) -> dict:
    pred = (p_pos >= threshold).astype(int)
    out: dict = {"n": int(len(y)), "threshold": threshold, "notes": []}
    classes_present = np.unique(y)
    if len(classes_present) < 2:
        out["auc"] = out["pr_auc"] = None
        out["notes"].append(
            f"only class {int(classes_present[0]) if len(classes_present) else '-'} present: "
            f"ROC AUC and PR AUC are undefined"
        )
    else:
        out["auc"] = _round(skm.roc_auc_score(y, p_pos))
        out["pr_auc"] = _round(skm.average_precision_score(y, p_pos))
    cm = skm.confusion_matrix(y, pred, labels=[0, 1])
    out["confusion_matrix"] = cm.tolist()
    out["accuracy"] = _round(skm.accuracy_score(y, pred))
    out["balanced_accuracy"] = _round(skm.balanced_accuracy_score(y, pred)) if len(classes_present) > 1 else None
    out["precision"] = _round(skm.precision_score(y, pred, zero_division=0))
    # a rate over an absent class is undefined, not 0: a positives-only set has no specificity
    out["recall"] = _round(skm.recall_score(y, pred, zero_division=0)) if (y == 1).any() else None  # sensitivity
    out["specificity"] = _round(skm.recall_score(y, pred, pos_label=0, zero_division=0)) if (y == 0).any() else None
    if len(classes_present) == 1:
        out["notes"].append(
            "sensitivity is undefined without positives"
            if classes_present[0] == 0
            else "specificity is undefined without negatives"
        )
    out["f1"] = _round(skm.f1_score(y, pred, zero_division=0))
    return out


def multiclass_metrics(y: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    pred = probs.argmax(1)
    labels = list(range(len(class_names)))
    out: dict = {"n": int(len(y)), "threshold": None, "notes": []}
    present = np.unique(y)
    per_class = {}
    for k, name in enumerate(class_names):
        yk = (y == k).astype(int)
        auc = skm.roc_auc_score(yk, probs[:, k]) if 0 < yk.sum() < len(yk) else None
        per_class[name] = {
            "auc_ovr": _round(auc),
            "precision": _round(skm.precision_score(y, pred, labels=[k], average="macro", zero_division=0)),
            "recall": _round(skm.recall_score(y, pred, labels=[k], average="macro", zero_division=0)),
            "f1": _round(skm.f1_score(y, pred, labels=[k], average="macro", zero_division=0)),
            "support": int(yk.sum()),
        }
    if len(present) == len(class_names):
        out["auc"] = _round(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=labels))
    else:
        aucs = [v["auc_ovr"] for v in per_class.values() if v["auc_ovr"] is not None]
        out["auc"] = _round(np.mean(aucs)) if aucs else None
        missing = [class_names[k] for k in labels if k not in present]
        out["notes"].append(f"classes absent from the data: {missing}; macro AUC is over the classes present")
    out["pr_auc"] = None
    out["accuracy"] = _round(skm.accuracy_score(y, pred))
    out["balanced_accuracy"] = _round(skm.balanced_accuracy_score(y, pred))
    out["precision"] = _round(skm.precision_score(y, pred, average="macro", labels=labels, zero_division=0))
    out["recall"] = _round(skm.recall_score(y, pred, average="macro", labels=labels, zero_division=0))
    out["specificity"] = None
    out["f1"] = _round(skm.f1_score(y, pred, average="macro", labels=labels, zero_division=0))
    out["f1_macro"] = out["f1"]
    out["f1_weighted"] = _round(skm.f1_score(y, pred, average="weighted", labels=labels, zero_division=0))
    out["confusion_matrix"] = skm.confusion_matrix(y, pred, labels=labels).tolist()
    out["per_class"] = per_class
    return out


def compute_metrics(y: np.ndarray, probs: np.ndarray, class_names: list[str], threshold: float = 0.5) -> dict:
    """Metrics for labels `y` (class indices) and probabilities (N, C)."""
    y = np.asarray(y)
    if len(y) == 0:
        return {"n": 0, "notes": ["no predictions: nothing to evaluate"], "auc": None}
    if len(class_names) == 2:
        out = binary_metrics(y, probs[:, 1], threshold)
        # binary models score class index 1: sensitivity, PPV, AUC and the threshold are about it
        out["positive_class"] = str(class_names[1])
    else:
        out = multiclass_metrics(y, probs, class_names)
    out["class_names"] = list(class_names)
    return out
