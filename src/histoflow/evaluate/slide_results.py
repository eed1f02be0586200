"""Slide-level results of a run in one call: scores, metrics, per-slide CSV and heatmap thumbnails.

What training on tile shards and the study workflow call after predicting tiles of each split:

    metrics["slides"] = evaluate_slides({"val": val_tiles, "test": test_tiles}, labels,
                                        class_names, ordinal=..., out_dir=run_dir, tiling_dir=tiles)

The validation split is evaluated first, with the default rules (0.5; cuts at k + 0.5) and its
best aggregation chosen on itself (said to be optimistic); every other split takes its threshold / cut points and its "best" aggregation
from it. Files, all written atomically, relative to `out_dir`:

    slides_<split>.csv                      the per-slide table
    report/slides/<split>/<slide>.png       heatmap thumbnails (tiles with x, y, size_px0 only)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from histoflow.core.io import atomic_path
from histoflow.core.pictures import probability_label
from histoflow.evaluate.slide_heatmap import Background, safe_name, slide_heatmap_thumbnail, tiling_background
from histoflow.evaluate.slide_metrics import slide_level_metrics
from histoflow.evaluate.slide_scores import AGGREGATE_METHODS, probability_columns, slide_scores, tile_values

log = logging.getLogger(__name__)

COORDINATES = ("x", "y", "size_px0")
MAX_THUMBNAILS = 200  # per split; the report embeds them, so a 2,000-slide study stays openable


def has_coordinates(tiles: pd.DataFrame) -> bool:
    """Whether tile predictions say where each tile lies (needed for heatmaps)."""
    return all(c in tiles.columns for c in COORDINATES)


def write_slide_thumbnails(
    tiles: pd.DataFrame,
    class_names: Sequence[str],
    out_dir: str | Path,
    slides: Sequence[str] | None = None,
    tiling_dir: str | Path | None = None,
    relative_to: str | Path | None = None,
    slide_column: str = "slide",
    max_px: int = 256,
) -> dict[str, str]:
    """One heatmap thumbnail per slide (default: every slide in `tiles`) under `out_dir`;
    returns {slide: path}, relative to `relative_to` when given.

    `tiles`: slide, x, y, size_px0 and p_<class> columns; the value drawn is the tile value the
    scores use (P(positive class), or the expected class index for K > 2 classes)."""
    out_dir = Path(out_dir)
    names = [str(c) for c in class_names]
    frame = tiles.assign(value=tile_values(tiles[probability_columns(tiles, names)].to_numpy()))
    frame[slide_column] = frame[slide_column].astype(str)
    if len(names) == 2:
        vmax, title, ticks = 1.0, probability_label(names[1]), None
    else:
        vmax, title, ticks = float(len(names) - 1), "class", [(float(i), n) for i, n in enumerate(names)]
    by_slide = dict(tuple(frame.groupby(slide_column, sort=False)))
    wanted = list(by_slide) if slides is None else [s for s in slides if s in by_slide]
    paths: dict[str, str] = {}
    used: set[str] = set()
    for slide in wanted:
        name = safe_name(slide)
        while name in used:  # two ids that map to one file name
            name += "_"
        used.add(name)
        bg: Background | None = tiling_background(tiling_dir, slide) if tiling_dir else None
        path = slide_heatmap_thumbnail(
            by_slide[slide], out_dir / f"{name}.png", bg, vmax=vmax, title=title, ticks=ticks, max_px=max_px
        )
        paths[slide] = str(path.relative_to(relative_to)) if relative_to else str(path)
    return paths


def write_slide_table(result: dict, path: str | Path) -> Path:
    """The per-slide table of a slide_level_metrics result as CSV (atomically)."""
    frame = pd.DataFrame(result.get("slides") or [])
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def _split_labels(labels: pd.DataFrame, split: str, scores: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The labels a split answers for: its rows when labels have a `split` column, else all but
    the slides scored in another split (so the val slides are not "missing" from test)."""
    if "split" in labels.columns:
        return labels[labels["split"].astype(str) == split]
    elsewhere = {str(s) for name, frame in scores.items() if name != split for s in frame["slide"]}
    return labels[~labels["slide"].astype(str).isin(elsewhere)]


def _merge(scores: pd.DataFrame, extra: pd.DataFrame | None) -> pd.DataFrame:
    if extra is None:
        return scores
    extra = extra.assign(slide=extra["slide"].astype(str))
    return scores.merge(extra, on="slide", how="outer")


def evaluate_slides(
    tiles: dict[str, pd.DataFrame],
    labels: pd.DataFrame,
    class_names: Sequence[str],
    ordinal: bool = False,
    extra_scores: dict[str, pd.DataFrame] | None = None,
    aggregations: Sequence[str] = AGGREGATE_METHODS,
    top_k: int = 10,
    threshold: float = 0.5,
    group_column: str | None = "patient",
    n_boot: int = 1000,
    seed: int = 0,
    out_dir: str | Path | None = None,
    tiling_dir: str | Path | None = None,
    max_thumbnails: int = MAX_THUMBNAILS,
) -> dict[str, dict]:
    """{split: slide_level_metrics result} for each split of tile predictions (metrics.json "slides").

    `labels`: slide, label[, patient][, split]; with a `split` column a labelled slide of a split
    that has no scores is counted "missing" in that split; without one, in every split (it cannot
    be placed). `extra_scores`: {split: frame with slide and more score columns} such as attention MIL's
    slide score (same scale as the aggregations). With `out_dir`, writes the per-slide CSVs and,
    where tiles carry x, y, size_px0, heatmap thumbnails (the misclassified slides first, at most
    `max_thumbnails` per split), recording each in its table row as `thumbnail`.
    """
    extra_scores = extra_scores or {}
    scores = {
        name: _merge(slide_scores(t, class_names, aggregations, top_k, threshold), extra_scores.get(name))
        for name, t in tiles.items()
    }
    results: dict[str, dict] = {}
    for name in scores:
        val = scores.get("val") if name != "val" else None
        res = slide_level_metrics(
            scores[name],
            _split_labels(labels, name, scores),
            class_names,
            ordinal=ordinal,
            val_scores=val,
            val_labels=labels,
            group_column=group_column,
            n_boot=n_boot,
            seed=seed,
        )
        results[name] = res
        if out_dir is not None:
            _write_files(res, tiles[name], class_names, Path(out_dir), name, tiling_dir, max_thumbnails)
    return results


def _write_files(res, tiles, class_names, out_dir: Path, split: str, tiling_dir, max_thumbnails: int) -> None:
    rows = res.get("slides") or []
    if rows and has_coordinates(tiles):
        wanted = [r["slide"] for r in sorted(rows, key=lambda r: r["correct"] is not False)][:max_thumbnails]
        paths = write_slide_thumbnails(
            tiles, class_names, out_dir / "report" / "slides" / split, wanted, tiling_dir, relative_to=out_dir
        )
        for r in rows:
            r["thumbnail"] = paths.get(r["slide"])
        if len(rows) > len(wanted):
            res["notes"].append(f"heatmap thumbnails for {len(wanted)} of {len(rows)} slides (misclassified first)")
    elif rows:
        res["notes"].append("no heatmap thumbnails: the tile predictions carry no x, y, size_px0")
    write_slide_table(res, out_dir / f"slides_{split}.csv")
