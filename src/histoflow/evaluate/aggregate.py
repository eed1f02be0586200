"""Patient- and slide-level results from patch predictions.

Patches of one patient are not independent cases: a clinician reads a patient (or a slide).
A group is positive when any of its patches is (a metastasis anywhere makes the node positive);
its score is the mean of its top-k patch probabilities (k = `top_fraction` of its patches, at
least one), which sits between the noisy max and the diluted mean.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from histoflow.evaluate.metrics import binary_metrics

log = logging.getLogger(__name__)


def group_columns(frame: pd.DataFrame) -> list[str]:
    """The grouping columns (`patient`, `slide`) that are filled in for every row."""
    cols = []
    for col in ("patient", "slide"):
        if col in frame and frame[col].notna().all() and (frame[col].astype(str) != "").all():
            cols.append(col)
    return cols


def _top_mean(values: np.ndarray, top_fraction: float) -> float:
    k = max(1, int(np.ceil(len(values) * top_fraction)))
    return float(np.sort(values)[-k:].mean())


def aggregate_groups(
    y: np.ndarray, p_pos: np.ndarray, groups, top_fraction: float = 0.1, threshold: float = 0.5
) -> pd.DataFrame:
    """One row per group: n_patches, n_positive, label (any positive), score, patch accuracy."""
    frame = pd.DataFrame(
        {"group": np.asarray(groups).astype(str), "y": np.asarray(y).astype(int), "p": np.asarray(p_pos, dtype=float)}
    )
    rows = []
    for name, g in frame.groupby("group", sort=True):
        rows.append(
            {
                "group": name,
                "n_patches": len(g),
                "n_positive": int(g["y"].sum()),
                "label": int(g["y"].max()),
                "score": round(_top_mean(g["p"].to_numpy(), top_fraction), 6),
                "mean_p": round(float(g["p"].mean()), 6),
                "patch_accuracy": round(float(((g["p"] >= threshold).astype(int) == g["y"]).mean()), 6),
            }
        )
    return pd.DataFrame(rows)


def group_level_metrics(y, p_pos, groups, level: str, threshold: float = 0.5, top_fraction: float = 0.1) -> dict:
    """Binary metrics over groups (patients or slides) plus the per-group table."""
    table = aggregate_groups(y, p_pos, groups, top_fraction, threshold)
    if table.empty:
        return {"level": level, "n": 0, "notes": ["no predictions"], "groups": []}
    result = binary_metrics(table["label"].to_numpy(), table["score"].to_numpy(), threshold)
    result["level"] = level
    result["score"] = f"mean of the top {top_fraction:.0%} patch probabilities (at least one patch)"
    result["label_rule"] = "positive when any patch is positive"
    result["groups"] = table.to_dict(orient="records")
    return result
