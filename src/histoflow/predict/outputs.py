"""The files of one predicted slide: tiles.parquet, probabilities.npy, GeoJSON, heatmap PNGs.

Everything here is written through histoflow.core.io; slide.json (which marks the slide
complete) is written last by predict.slide, after these.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from histoflow.core.io import atomic_path, atomic_write_bytes
from histoflow.core.pictures import class_label, probability_label
from histoflow.predict.aggregate import all_scores
from histoflow.predict.geojson import regions_geojson, tiles_geojson, write_geojson
from histoflow.predict.heatmap import render_heatmap
from histoflow.predict.model_loop import ModelOutput
from histoflow.predict.tiles import TilePlan

log = logging.getLogger(__name__)


def write_outputs(pred, slide, slide_id: str, slide_path: str, out_dir: Path, plan: TilePlan, res: ModelOutput) -> dict:
    """Write a slide's outputs from the model's results (`pred`: a predict.slide.Predictor);
    returns the slide.json report, less timings and fingerprint."""
    import pyarrow as pa

    cfg, geom, k = pred.cfg, plan.geom, pred.positive
    names = pred.class_names
    specs = [plan.specs[i] for i in res.indices]
    xs = np.array([s.x for s in specs], np.int64)
    ys = np.array([s.y for s in specs], np.int64)
    rows_i = ((ys - geom.y0) // geom.stride_px0).astype(np.int64)
    cols_i = ((xs - geom.x0) // geom.stride_px0).astype(np.int64)
    grid = np.full((geom.rows, geom.cols, len(names)), np.nan, np.float32)
    grid[rows_i, cols_i] = res.probs
    out_dir.mkdir(parents=True, exist_ok=True)

    cols = {
        "tile_id": [s.tile_id for s in specs],
        "x": xs,
        "y": ys,
        "row": rows_i,
        "col": cols_i,
        "tissue_fraction": np.array([s.tissue_fraction for s in specs], np.float32),
    }
    for j, name in enumerate(names):
        cols[f"prob_{name}"] = res.probs[:, j].astype(np.float32)
    pos = res.probs[:, k] if len(res.probs) else np.zeros(0, np.float32)
    scores = all_scores(pos, cfg.aggregate)
    learned, agg = None, pred.aggregator
    if agg is not None and res.features is not None and len(res.features):
        learned = agg(res.features)
        cols["attention"] = learned["attention"].astype(np.float32)
        scores[agg.name] = learned["score"]
    write_parquet(out_dir / "tiles.parquet", pa.table(cols))
    write_npy(out_dir / "probabilities.npy", grid)

    n_err = len(res.errors)
    status = "complete" if specs else ("no_tissue" if not plan.specs else "failed")
    report = {
        "slide_id": slide_id,
        "slide": slide_path,
        "status": status,
        "checkpoint": str(pred.checkpoint.path),
        "class_names": names,
        "positive_class": names[k],
        "tile_px": pred.tile_px,
        "mpp": pred.mpp,
        "resampled": plan.resampled,
        "level": plan.level,
        "grid": geom.to_dict(),
        "tiles": {"planned": len(plan.specs), "scored": len(specs), "skipped_read_errors": n_err},
        "errors": [f"{plan.specs[i].tile_id}: {msg}" for i, msg in res.errors[:20]],
        "aggregation": cfg.aggregate.model_dump(),
        "score": scores[agg.name] if agg is not None and agg.name in scores else scores[cfg.aggregate.method],
        "score_method": agg.name if agg is not None and agg.name in scores else cfg.aggregate.method,
        "scores": scores,
        "mean_probabilities": {
            n: (float(res.probs[:, j].mean()) if len(res.probs) else None) for j, n in enumerate(names)
        },
    }
    if learned is not None:
        report[agg.report_key] = learned["report"]
    if status == "failed":
        report["error"] = (
            f"{slide_id}: every one of {len(plan.specs)} tiles failed to read (first: {report['errors'][:1]})"
        )
    if n_err:
        log.warning(
            "%s: %d of %d tiles could not be read and were skipped (listed in slide.json)",
            slide_id,
            n_err,
            len(plan.specs),
        )
    _write_pictures(
        pred,
        slide,
        slide_id,
        out_dir,
        plan,
        grid[..., k],
        report,
        attention=None if learned is None else (rows_i, cols_i, learned["attention"], agg.label),
    )
    tiles = tiles_geojson(
        xs, ys, res.probs, names, geom.region_px0, k, cfg.aggregate.threshold, cols["tissue_fraction"]
    )
    write_geojson(out_dir / "tiles.geojson", tiles)
    return report


def _write_pictures(pred, slide, slide_id, out_dir, plan, values, report, attention=None) -> None:
    cfg, geom = pred.cfg, plan.geom
    cls = f"{class_label(report['positive_class'])} >= {cfg.aggregate.threshold:g}"
    write_geojson(out_dir / "regions.geojson", regions_geojson(values, geom, cfg.aggregate.threshold, cls))
    thumb, ds, tissue = _thumbnail(slide, plan, cfg)
    if thumb is None:
        report["heatmap"] = "not written: no readable thumbnail (see the log)"
        return
    score, label, mpp = report["score"], probability_label(report["positive_class"]), slide.mpp
    title = (
        f"{slide_id}: {report['score_method']} of {label} = "
        f"{'n/a' if score is None else f'{score:.3f}'}  "
        f"({report['tiles']['scored']} tiles of {report['tile_px']} px at {report['mpp']:g} um/px)"
    )
    render_heatmap(out_dir / "heatmap.png", thumb, ds, values, geom, tissue, title=title, label=label, mpp=mpp)
    if attention is not None:
        r, c, a, label = attention
        att = np.full((geom.rows, geom.cols), np.nan, np.float32)
        att[r, c] = a / a.max() if a.size and a.max() > 0 else a
        render_heatmap(
            out_dir / "attention.png",
            thumb,
            ds,
            att,
            geom,
            tissue,
            title=f"{slide_id}: {label} weights (scaled to max 1)",
            label="attention / max",
            mpp=mpp,
        )


def _thumbnail(slide, plan: TilePlan, cfg):
    """(RGB thumbnail, its downsample, tissue mask) or Nones when there is no slide to look at."""
    if slide is None:
        return None, 1.0, None
    from histoflow.core.errors import SlideReadError

    w, h = slide.dimensions
    ds = max(1.0, max(w, h) / cfg.thumbnail_px)
    # a corrupt region costs tiles, not the picture: fall back to the coarsest level, which the
    # tissue mask was already read from successfully
    for attempt in dict.fromkeys([ds, max(ds, slide.level_downsamples[-1])]):
        try:
            return slide.read_downsampled(attempt), attempt, plan.tissue
        except SlideReadError as exc:
            log.warning("%s: thumbnail at downsample %.3g failed (%s)", slide.slide_id, attempt, exc)
    return None, 1.0, None


def write_parquet(path: Path, table) -> None:
    """A pyarrow table as Parquet, atomically."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_npy(path: Path, arr: np.ndarray) -> None:
    """An array as .npy, atomically."""
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())
