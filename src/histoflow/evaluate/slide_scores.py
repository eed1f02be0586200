"""Slide scores from tile predictions: one continuous score per slide and aggregation rule.

A slide is the unit a pathologist signs out, so whole-slide studies are judged per slide; the
tile predictions are only the means. Each tile first gets one value on the label scale:

- binary (2 classes): P(positive class), the positive class being `class_names[1]` as in every
  other histoflow binary figure;
- K > 2 classes: the expected class index sum_k k * p_k, which reads the classes as an ordered
  scale in `class_names` order (grade 1 < 2 < 3). For ordinal labels that is the point; for
  nominal labels the score has no meaning and slide_metrics says so.

The rules are predict.aggregate's (`max`, `mean`, `topk_mean` over the k highest tiles,
`fraction` of tiles called positive), so a study's figures and predict-slide's slide.json
`scores` name the same things. `fraction` for K > 2 counts, for each cut k = 1..K-1, the share
of tiles whose cumulative probability P(class >= k) reaches `threshold`, and sums them: the mean
"at least grade k" call, on 0..K-1 like the other rules, and exactly the binary fraction when K = 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from histoflow.config.slides import AGGREGATE_METHODS
from histoflow.core.errors import DataError
from histoflow.predict.aggregate import aggregate

__all__ = ["AGGREGATE_METHODS", "labels_from_tiles", "probability_columns", "slide_scores", "tile_values"]

# predictions_<split>.csv writes p_<class>; predict-slide's tiles.parquet writes prob_<class>
PREFIXES = ("p_", "prob_")


def probability_columns(tiles: pd.DataFrame, class_names: Sequence[str]) -> list[str]:
    """The per-class probability columns of `tiles`, in class order (p_<class> or prob_<class>)."""
    for prefix in PREFIXES:
        cols = [f"{prefix}{c}" for c in class_names]
        if all(c in tiles.columns for c in cols):
            return cols
    raise DataError(
        f"tile predictions lack probability columns for classes {list(class_names)}: expected "
        f"{[f'p_{c}' for c in class_names]} (or prob_<class>), got {list(tiles.columns)}"
    )


def tile_values(probs: np.ndarray) -> np.ndarray:
    """One value per tile: P(class 1) for two classes, the expected class index for more."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 2:
        return probs[:, 1]
    return probs @ np.arange(probs.shape[1], dtype=np.float64)


def _fraction(probs: np.ndarray, threshold: float) -> float:
    """Sum over cuts k >= 1 of the share of tiles with P(class >= k) >= threshold (see module doc)."""
    at_least = np.cumsum(probs[:, ::-1], axis=1)[:, ::-1][:, 1:]  # column k-1: P(class >= k)
    return float((at_least >= threshold - 1e-12).mean(axis=0).sum())


def slide_scores(
    tiles: pd.DataFrame,
    class_names: Sequence[str],
    aggregations: Sequence[str] = AGGREGATE_METHODS,
    top_k: int = 10,
    threshold: float = 0.5,
    slide_column: str = "slide",
) -> pd.DataFrame:
    """One row per slide: `slide`, `n_tiles` and one score column per aggregation.

    `tiles`: one row per tile with `slide_column` and p_<class> (or prob_<class>) columns.
    `top_k`: tiles averaged by `topk_mean` (an absolute count, as predict-slide's `aggregate.k`;
    all tiles when a slide has fewer). A count rather than a fraction keeps the score of a small
    focus from being diluted on a large slide. Tiles with a missing probability are ignored; a
    slide whose tiles all lack one has n_tiles 0 and no scores (NaN), never a confident 0.
    """
    unknown = [a for a in aggregations if a not in AGGREGATE_METHODS]
    if unknown:
        raise DataError(f"unknown aggregation(s) {unknown}: choose from {list(AGGREGATE_METHODS)}")
    if slide_column not in tiles.columns:
        raise DataError(f"tile predictions lack a {slide_column!r} column (columns: {list(tiles.columns)})")
    if len(class_names) < 2:
        raise DataError(f"slide scores need at least 2 classes, got {list(class_names)}")
    cols = probability_columns(tiles, class_names)
    slides = tiles[slide_column].astype(str).to_numpy()
    probs = tiles[cols].to_numpy(dtype=np.float64)
    values = tile_values(np.nan_to_num(probs, nan=0.0))
    valid = np.isfinite(probs).all(axis=1)
    rows = []
    order = pd.unique(slides)
    index = pd.Series(np.arange(len(slides))).groupby(slides, sort=False).indices
    for slide in order:
        idx = index[slide]
        idx = idx[valid[idx]]
        row: dict = {"slide": slide, "n_tiles": len(idx)}
        for agg in aggregations:
            if agg == "fraction" and len(class_names) > 2:
                row[agg] = _fraction(probs[idx], threshold) if len(idx) else np.nan
            else:
                score = aggregate(values[idx], agg, k=top_k, threshold=threshold)
                row[agg] = np.nan if score is None else score
        rows.append(row)
    return pd.DataFrame(rows, columns=["slide", "n_tiles", *aggregations])


def labels_from_tiles(
    tiles: pd.DataFrame,
    class_names: Sequence[str],
    label_column: str = "label",
    slide_column: str = "slide",
    group_column: str = "patient",
) -> tuple[pd.DataFrame, list[str]]:
    """Slide labels (class names) from per-tile labels such as predictions_<split>.csv holds.

    Tiles cut from a labelled slide all carry its label. Where the tiles of one slide disagree
    (patch data with patch labels), the slide takes its highest class: a metastasis anywhere
    makes the node positive, the worst region sets the grade. Integer labels are class indices
    (as predictions_<split>.csv writes them), text labels class names. Returns (frame with
    slide, label[, group_column], notes).
    """
    if label_column not in tiles.columns:
        raise DataError(f"tile predictions lack a {label_column!r} column: give slide labels instead")
    names = [str(c) for c in class_names]
    raw = tiles[label_column]
    if pd.api.types.is_integer_dtype(raw):
        bad = sorted(set(raw[(raw < 0) | (raw >= len(names))].tolist()))
        if bad:
            raise DataError(f"label indices {bad} are outside the {len(names)} classes {names}")
        index = raw.to_numpy()
    else:
        text = raw.astype(str)
        bad = sorted(set(text[~text.isin(names)]))
        if bad:
            raise DataError(f"labels {bad[:10]} are not among the classes {names}")
        index = text.map({n: i for i, n in enumerate(names)}).to_numpy()
    frame = pd.DataFrame({"slide": tiles[slide_column].astype(str).to_numpy(), "y": index})
    keep_group = group_column in tiles.columns
    if keep_group:
        frame["_group"] = tiles[group_column].astype(str).to_numpy()
    grouped = frame.groupby("slide", sort=False)
    out = grouped["y"].max().rename("y").reset_index()
    notes = []
    mixed = int((grouped["y"].nunique() > 1).sum())
    if mixed:
        notes.append(f"{mixed} slide(s) hold tiles of several labels: each takes its highest class")
    out["label"] = [names[i] for i in out["y"]]
    cols = ["slide", "label"]
    if keep_group:
        out[group_column] = grouped["_group"].first().to_numpy()
        cols.append(group_column)
    return out[cols], notes
