"""Slide-level metrics of every aggregation, with decision rules fixed on validation slides.

Binary labels: ROC AUC, and accuracy / sensitivity / specificity at Youden's threshold. Ordinal
labels (K ordered classes): quadratic weighted kappa and accuracy of the class read from the
continuous score by cut points, and Spearman's rho of score against label. The threshold and
cut points are chosen on the validation slides and then applied unchanged, and the "best"
aggregation is the one with the best validation figure: choosing either on the slides being
reported would flatter the headline. Without validation slides the defaults are used (0.5;
cuts at k + 0.5) and a note says so.

Confidence intervals are percentile bootstraps over slides, or over patients when patients own
several slides (their slides are not independent cases). The result is JSON-ready: numbers are
rounded and undefined values are None with a note, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from histoflow.core.errors import DataError
from histoflow.evaluate.operating import youden_threshold
from histoflow.evaluate.slide_stats import (
    bootstrap,
    classify,
    default_cuts,
    group_members,
    qwk,
    qwk_cut_points,
    r6,
    rank_auc,
    spearman,
)

TUPAC16_REFERENCE = (
    "For scale only: in TUPAC16 (Veta et al., Medical Image Analysis 2019) the winning method predicted "
    "the proliferation score of whole slides with a quadratic weighted kappa of 0.567 on TUPAC16's own "
    "test slides. Other slides and another label source: it is context, not a result of this run."
)
LISTED = 50  # slide names listed per unlabelled/missing set; the count is always the total
RESERVED = ("slide", "n_tiles")
HEADLINE = {"binary": "auc", "ordinal": "quadratic_kappa"}
HEADLINE_NAME = {"auc": "ROC AUC", "quadratic_kappa": "quadratic weighted kappa"}


def score_columns(scores: pd.DataFrame, group_column: str | None = "patient") -> list[str]:
    """The numeric score columns: every column but slide, n_tiles and the group column."""
    skip = {*RESERVED, group_column}
    return [c for c in scores.columns if c not in skip and pd.api.types.is_numeric_dtype(scores[c])]


def label_index(labels: pd.DataFrame, class_names: Sequence[str], group_column: str | None) -> pd.DataFrame:
    """slide, y (class index)[, group]: one row per slide; labels are class names as text."""
    for col in ("slide", "label"):
        if col not in labels.columns:
            raise DataError(f"slide labels need columns slide and label (got {list(labels.columns)})")
    names = [str(c) for c in class_names]
    frame = labels.dropna(subset=["label"]).copy()
    frame["slide"] = frame["slide"].astype(str)
    frame["label"] = frame["label"].astype(str)
    dup = frame["slide"][frame["slide"].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"slide labels list slide(s) {dup[:10]} more than once")
    bad = sorted(set(frame["label"]) - set(names))
    if bad:
        raise DataError(f"slide labels {bad[:10]} are not among the classes {names}")
    frame["y"] = frame["label"].map({n: i for i, n in enumerate(names)}).astype(int)
    keep = ["slide", "label", "y"]
    if group_column and group_column in frame.columns and frame[group_column].notna().all():
        frame["group"] = frame[group_column].astype(str)
        keep.append("group")
    return frame[keep]


def _listed(slides: list[str]) -> dict:
    return {"n": len(slides), "slides": sorted(slides)[:LISTED]}


def align(scores: pd.DataFrame, labels: pd.DataFrame, class_names, group_column: str | None):
    """(scored and labelled slides, unlabelled slide names, labelled slides without scores)."""
    lab = label_index(labels, class_names, group_column)
    sc = scores.copy()
    sc["slide"] = sc["slide"].astype(str)
    merged = sc.merge(lab, on="slide", how="inner", suffixes=("", "_label"))
    unlabelled = sorted(set(sc["slide"]) - set(lab["slide"]))
    return merged, unlabelled, sorted(set(lab["slide"]) - set(sc["slide"]))


def _members(frame: pd.DataFrame) -> tuple[list[np.ndarray], str]:
    """Bootstrap units: patients when some own several slides, else slides."""
    if "group" in frame.columns and frame["group"].nunique() < len(frame):
        return group_members(frame["group"].to_numpy(), len(frame)), "patient"
    return group_members(None, len(frame)), "slide"


def _rule(task: str, y: np.ndarray, s: np.ndarray, n_classes: int) -> tuple[Any, float | None]:
    """(threshold or cut points chosen on these slides, or None when undefined; their figure)."""
    if task == "binary":
        if len(np.unique(y)) < 2:
            return None, None
        t = youden_threshold(y, s)
        return t, rank_auc(y, s)
    cuts = qwk_cut_points(y, s, n_classes)
    return cuts, None if cuts is None else qwk(y, classify(s, cuts), n_classes)


def _binary(y, s, threshold: float, members, n_boot: int, seed: int) -> dict:
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    out: dict = {
        "n": len(y),
        "auc": r6(skm.roc_auc_score(y, s)) if len(np.unique(y)) == 2 else None,
        "threshold": r6(threshold),
        "accuracy": r6((pred == y).mean()) if len(y) else None,
        "sensitivity": r6(tp / (tp + fn)) if tp + fn else None,
        "specificity": r6(tn / (tn + fp)) if tn + fp else None,
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "tn": int(tn),
    }

    def stat(idx):
        yb, pb = y[idx], pred[idx]
        pos = yb == 1
        return {
            "auc": rank_auc(yb, s[idx]),
            "accuracy": float((pb == yb).mean()),
            "sensitivity": float(pb[pos].mean()) if pos.any() else None,
            "specificity": float(1 - pb[~pos].mean()) if (~pos).any() else None,
        }

    cis, _ = bootstrap(stat, members, n_boot, seed)
    out.update({f"{k}_ci": v for k, v in cis.items()})
    return out


def _ordinal(y, s, cuts: list[float], n_classes: int, members, n_boot: int, seed: int) -> dict:
    pred = classify(s, cuts)
    labels = list(range(n_classes))
    defined = qwk(y, pred, n_classes) is not None  # sklearn warns and gives NaN otherwise
    kappa = skm.cohen_kappa_score(y, pred, weights="quadratic", labels=labels) if defined else None
    out: dict = {
        "n": len(y),
        "quadratic_kappa": r6(kappa),
        "accuracy": r6((pred == y).mean()) if len(y) else None,
        "spearman": r6(spearman(y, s)),
        "cut_points": [r6(c) for c in cuts],
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels).tolist(),
    }

    def stat(idx):
        yb, pb = y[idx], pred[idx]
        return {
            "quadratic_kappa": qwk(yb, pb, n_classes),
            "accuracy": float((pb == yb).mean()),
            "spearman": spearman(yb, s[idx]),
        }

    cis, _ = bootstrap(stat, members, n_boot, seed)
    out.update({f"{k}_ci": v for k, v in cis.items()})
    return out


def _task(class_names: Sequence[str], ordinal: bool) -> str:
    if len(class_names) == 2:
        return "binary"
    return "ordinal" if ordinal else "multiclass"


def slide_level_metrics(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    class_names: Sequence[str],
    ordinal: bool = False,
    val_scores: pd.DataFrame | None = None,
    val_labels: pd.DataFrame | None = None,
    group_column: str | None = "patient",
    n_boot: int = 1000,
    seed: int = 0,
    columns: Sequence[str] | None = None,
) -> dict:
    """Slide-level metrics of each score column of `scores` (JSON-ready; see the module doc).

    `scores`: slide, [n_tiles,] one float column per aggregation (slide_scores' output, plus any
    external slide score such as attention MIL's, on the same scale: P(positive class) for two
    classes, the expected class index for K ordinal classes). `labels`: slide, label (class
    names as text)[, group_column]. `val_scores` (+ `val_labels`, default `labels`): the
    validation slides the threshold / cut points and the best aggregation are chosen on.
    `columns`: the score columns to evaluate (default: every numeric one but n_tiles).
    """
    names = [str(c) for c in class_names]
    task = _task(names, ordinal)
    k = len(names)
    columns = list(columns) if columns is not None else score_columns(scores, group_column)
    frame, unlabelled, missing = align(scores, labels, names, group_column)
    out: dict = {
        "task": task,
        "class_names": names,
        "n_slides": len(frame),
        "unlabelled": _listed(unlabelled),
        "missing": _listed(missing),
        "aggregations": {},
        "best": None,
        "notes": [],
    }
    if task == "binary":
        out["positive_class"] = names[1]
        out["n_positive"] = int((frame["y"] == 1).sum())
    else:
        out["class_counts"] = {n: int((frame["y"] == i).sum()) for i, n in enumerate(names)}
    if task == "ordinal":
        out["reference"] = TUPAC16_REFERENCE
    if task == "multiclass":
        out["notes"].append(
            "labels with more than two unordered classes: slide scores read the classes as an ordered scale, "
            "so no slide-level metrics are given (pass ordinal=True if the class order is a grade)"
        )
        return out
    val = None
    if val_scores is not None:
        val, _, _ = align(val_scores, labels if val_labels is None else val_labels, names, group_column)
    members_all, unit = _members(frame)
    out["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": 0.95, "resampled": unit, "n_units": len(members_all)}
    out["decision_rule"] = _rule_text(task, val is not None and len(val) > 0)
    val_figure: dict[str, float | None] = {}
    rules: dict[str, Any] = {}
    for col in columns:
        ok = np.isfinite(frame[col].to_numpy(dtype=np.float64))
        part = frame[ok].reset_index(drop=True)
        if not ok.all():
            out["notes"].append(f"{col}: {int((~ok).sum())} slide(s) without a score are left out")
        y, s = part["y"].to_numpy(), part[col].to_numpy(dtype=np.float64)
        rule: Any = None
        figure, source = None, "default"
        if val is not None and col in val.columns:
            v = val[np.isfinite(val[col].to_numpy(dtype=np.float64))]
            rule, figure = _rule(task, v["y"].to_numpy(), v[col].to_numpy(dtype=np.float64), k)
            source = "validation" if rule is not None else "default (validation slides hold one class)"
        if rule is None:
            rule = 0.5 if task == "binary" else default_cuts(k)
        rules[col] = rule
        res: dict = {"n": 0}
        if len(part) and task == "binary":
            res = _binary(y, s, float(rule), _members(part)[0], n_boot, seed)
        elif len(part):
            res = _ordinal(y, s, rule, k, _members(part)[0], n_boot, seed)
        res["rule_from"] = source
        res["validation_" + HEADLINE[task]] = r6(figure)
        val_figure[col] = figure
        out["aggregations"][col] = res
    out["best"] = _best(out["aggregations"], val_figure, task, val is not None)
    key = HEADLINE[task]
    if any(a.get(key) is None for a in out["aggregations"].values()):
        out["notes"].append(f"{HEADLINE_NAME[key]} undefined where the slides hold one class (or nothing varies)")
    if out["best"] is None and columns:
        out["notes"].append("no best aggregation: no figure to rank them by")
    out["slides"] = slide_table(frame, columns, task, names, out["best"], rules)
    return out


def _rule_text(task: str, from_val: bool) -> str:
    if task == "binary":
        return (
            "threshold: Youden's J on the validation slides, applied unchanged"
            if from_val
            else "threshold 0.5 (no validation slides given)"
        )
    return (
        "class from score: cut points maximising quadratic kappa on the validation slides, applied unchanged"
        if from_val
        else "class from score: cut points at k + 0.5, i.e. the nearest class (no validation slides given)"
    )


def _best(aggs: dict, val_figure: dict, task: str, from_val: bool) -> dict | None:
    """The aggregation with the best validation figure (else this data's, said to be optimistic)."""
    key = HEADLINE[task]
    label = HEADLINE_NAME[key]
    figures = val_figure if from_val else {c: a.get(key) for c, a in aggs.items()}
    ranked = [(v, c) for c, v in figures.items() if v is not None]
    if not ranked:
        return None
    value = max(v for v, _ in ranked)
    name = next(c for v, c in ranked if v == value)  # ties: the first column
    by = f"validation {label}" if from_val else f"{label} of these same slides (chosen on what it reports: optimistic)"
    return {"aggregation": name, "by": by, "value": r6(value)}


def slide_table(
    frame: pd.DataFrame, columns: Sequence[str], task: str, names: list[str], best: dict | None, rules: dict
) -> list[dict]:
    """One row per slide: slide, patient, label, n_tiles, each score, the class predicted by the
    best aggregation's rule (the exact threshold / cut points, not their rounded print), and
    whether it is right."""
    col = best["aggregation"] if best else None
    rows = []
    for r in frame.to_dict(orient="records"):
        row: dict = {"slide": r["slide"], "patient": r.get("group"), "label": r["label"], "n_tiles": r.get("n_tiles")}
        row.update({c: r6(r[c]) for c in columns})
        pred = None
        if col is not None and np.isfinite(r[col]):
            if task == "binary":
                pred = names[int(r[col] >= rules[col])]
            else:
                pred = names[int(classify(np.array([r[col]], dtype=np.float64), rules[col])[0])]
        row["predicted"] = pred
        row["correct"] = None if pred is None else pred == r["label"]
        rows.append(row)
    return rows
