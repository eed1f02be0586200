"""A study's slide-level evaluation: both arms on the same held-out slides, side by side.

Arm (a), tiles + aggregation: the tile classifier's predictions of every val/test tile
(OUT/tile_model/predictions_<split>.csv) become slide scores by each aggregation. Arm (b),
attention MIL: its slide probabilities (OUT/mil/predictions.csv), on the same scale
(P(positive class); the expected class index for ordinal labels). Both go through
`histoflow.evaluate.slide_results.evaluate_slides`, so the decision rule (threshold, cut points)
and the tile arm's best aggregation are fixed on the validation slides and only then applied
to the test slides; the comparison quotes the test slides with bootstrap CIs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.config.study import StudyConfig
from histoflow.core.io import atomic_write_json

log = logging.getLogger(__name__)
MIL = "mil"
HEADLINE = {"binary": ("auc", "slide ROC AUC"), "ordinal": ("quadratic_kappa", "quadratic weighted kappa")}


def mil_scores(predictions: Path, class_names: list[str], task: str) -> dict[str, pd.DataFrame]:
    """{split: slide, mil} from train-mil's predictions.csv, on the aggregations' scale."""
    frame = pd.read_csv(predictions, dtype={"id": str, "split": str})
    probs = frame[[f"prob_{c}" for c in class_names]].to_numpy(dtype=np.float64)
    score = probs[:, 1] if task == "binary" else probs @ np.arange(len(class_names), dtype=np.float64)
    frame = frame.assign(slide=frame["id"], **{MIL: score})
    return {split: part[["slide", MIL]].reset_index(drop=True) for split, part in frame.groupby("split")}


def _tile_predictions(model_folder: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for split in ("val", "test"):
        path = model_folder / f"predictions_{split}.csv"
        if path.is_file():
            out[split] = pd.read_csv(path, dtype={"slide": str, "patient": str, "label": str})
    return out


def comparison(results: dict[str, dict], task: str, has_mil: bool) -> dict:
    """The test slides' headline figure of the tile arm's best aggregation (chosen on val) and of MIL."""
    if task not in HEADLINE:
        return {"notes": [f"no slide-level headline for task {task}"]}
    key, label = HEADLINE[task]
    split = "test" if "test" in results else "val"
    result = results.get(split) or {}
    aggs = result.get("aggregations") or {}
    val_aggs = (results.get("val") or {}).get("aggregations") or {}
    tile_cols = [c for c in aggs if c != MIL]
    # the tile arm's aggregation is picked on the validation slides only (never on the reported
    # ones), by its validation figure under the rule fitted there; ties go to the first listed
    figures = {c: _validation_figure(aggs, val_aggs, c, key) for c in tile_cols}
    ranked = [c for c in tile_cols if figures[c] is not None]
    best_tile = max(ranked, key=lambda c: (figures[c], -tile_cols.index(c))) if ranked else None
    arms = []
    for name, col in (("tiles + " + str(best_tile), best_tile), ("attention MIL", MIL if has_mil else None)):
        if col is None or col not in aggs:
            continue
        a = aggs[col]
        arms.append(
            {
                "arm": name,
                "column": col,
                "split": split,
                "metric": label,
                "value": a.get(key),
                "ci": a.get(f"{key}_ci"),
                "accuracy": a.get("accuracy"),
                "accuracy_ci": a.get("accuracy_ci"),
                "validation": _validation_figure(aggs, val_aggs, col, key),
            }
        )
    out: dict = {"split": split, "metric": label, "arms": arms, "n_slides": result.get("n_slides")}
    scored = [a for a in arms if a["value"] is not None]
    if len(scored) == 2:
        a, b = scored
        winner, other = (a, b) if a["value"] >= b["value"] else (b, a)
        overlap = bool(a["ci"] and b["ci"] and a["ci"][0] <= b["ci"][1] and b["ci"][0] <= a["ci"][1])
        out["winner"] = winner["arm"]
        out["verdict"] = (
            f"{winner['arm']} {winner['value']:.3f} vs {other['arm']} {other['value']:.3f} ({label}, "
            f"{result.get('n_slides')} {split} slides)"
            + ("; the 95% CIs overlap, so this cohort cannot separate them" if overlap else "; the CIs do not overlap")
        )
    return out


def _validation_figure(aggs: dict, val_aggs: dict, col: str, key: str) -> float | None:
    """The validation slides' figure of a score column with the rule fitted on them (recorded with
    the reported split); on the validation split itself, its own figure."""
    fitted = (aggs.get(col) or {}).get(f"validation_{key}")
    return fitted if fitted is not None else (val_aggs.get(col) or {}).get(key)


def evaluate_study(
    cfg: StudyConfig,
    task: str,
    class_names: list[str],
    labels: pd.DataFrame,
    tiles: Path,
    model_folder: Path,
    mil,
    folder: Path,
) -> dict:
    """Write OUT/evaluation/metrics.json (+ per-slide CSVs, thumbnails); returns its summary."""
    from histoflow.evaluate.slide_results import evaluate_slides

    predictions = _tile_predictions(model_folder)
    slide_labels = labels[labels["x"].isna()].drop_duplicates("slide")[["slide", "label", "patient"]]
    splits = pd.read_csv(model_folder / "splits.csv", usecols=["slide", "split"], dtype=str).drop_duplicates("slide")
    slide_labels = slide_labels.drop(columns=[]).merge(splits, on="slide", how="left")
    slide_labels["patient"] = slide_labels["patient"].where(slide_labels["patient"] != "", slide_labels["slide"])
    extra = mil_scores(mil.folder / "predictions.csv", class_names, task) if mil is not None else {}
    e = cfg.evaluation
    results = evaluate_slides(
        predictions,
        slide_labels,
        class_names,
        ordinal=task == "ordinal",
        extra_scores=extra,
        aggregations=e.aggregations,
        top_k=e.top_k,
        threshold=e.threshold,
        n_boot=e.n_boot,
        seed=cfg.seed,
        out_dir=folder,
        tiling_dir=tiles,
    )
    summary = {"task": task, "classes": class_names, "comparison": comparison(results, task, mil is not None)}
    atomic_write_json(folder / "metrics.json", {"slides": results, **summary})
    return summary
