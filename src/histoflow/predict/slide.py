"""Slide-level prediction: tiles streamed from the slide -> patch model -> grid, heatmap, score.

    OUT/<slide_id>/tiles.parquet        tile_id, x, y, row, col, tissue_fraction, prob_<class>... [, attention]
    OUT/<slide_id>/probabilities.npy    (rows, cols, classes) float32, NaN where no tile was scored
    OUT/<slide_id>/heatmap.png          thumbnail and positive-class probability, colour bar, tissue outline
    OUT/<slide_id>/regions.geojson      connected regions >= threshold (QuPath: File > Import objects)
    OUT/<slide_id>/tiles.geojson        every tile >= threshold, one square annotation each
    OUT/<slide_id>/slide.json           slide-level scores, counts, skipped tiles and why, timings
    OUT/<slide_id>/attention.png        attention-MIL weights, when a MIL aggregator is given

slide.json is written last and atomically: a slide whose slide.json says `complete` (with the
same checkpoint and settings) is skipped on a re-run, so an interrupted batch resumes where it
stopped. Tiles come from the slide itself (tissue mask + grid at the checkpoint's resolution)
or from an existing tiling run (`tiles_dir`, shards written by `histoflow tile`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from histoflow.core.errors import CheckpointError, ConfigError, DataError, HistoflowError
from histoflow.config.slides import SlidePredictConfig
from histoflow.predict.aggregate import all_scores
from histoflow.predict.heatmap import GridGeometry, regions_geojson, render_heatmap, tiles_geojson, write_geojson
from histoflow.predict.pipeline import EncodedTileSource, SlideTileSource, stream_batches
from histoflow.tiling.grid import MPP_TOLERANCE, TileConfig, TileSpec, _window_fractions, resolve_geometry
from histoflow.tiling.shards import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)
PCAM_MPP_HINT = "PCam patches are 96 px at about 0.972 um/px (10x)"


# -- resolution ----------------------------------------------------------------------------------------
def checkpoint_resolution(meta: dict, mpp: float | None) -> tuple[int, float]:
    """(tile_px, mpp) the model was trained at. A checkpoint trained on patch folders stores no
    mpp: the user must say it (never guessed: a wrong mpp changes what every tile shows)."""
    tile_px = int(meta.get("tile_px") or meta["image_px"])
    stored = meta.get("mpp") or (meta.get("run_config", {}).get("tiles", {}) or {}).get("mpp")
    name = meta.get("path", "checkpoint")
    if mpp is not None:
        if not mpp > 0:
            raise ConfigError(f"--mpp must be > 0, got {mpp}")
        if stored and abs(stored - mpp) / stored > MPP_TOLERANCE:
            log.warning("%s: trained at %g um/px; predicting at --mpp %g as asked", name, stored, mpp)
        return tile_px, float(mpp)
    if stored:
        return tile_px, float(stored)
    raise ConfigError(f"{name}: the checkpoint does not record the microns per pixel it was trained at "
                      f"(trained on patches?); pass --mpp, e.g. --mpp 0.972 for a PCam model ({PCAM_MPP_HINT})")


def checkpoint_fingerprint(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# -- planning: tissue mask and grid at the model's resolution ------------------------------------------
@dataclass
class TilePlan:
    specs: list[TileSpec]
    geom: GridGeometry
    tissue: np.ndarray | None       # mask at mask_downsample
    mask_downsample: float
    level: int
    read_px: int
    resampled: bool


def tile_geometry(slide, tile_px: int, mpp: float, cfg: SlidePredictConfig) -> tuple[int, int, int, int, bool]:
    """(level, read_px, region_px0, stride_px0, upsampled) or a ConfigError naming the slide."""
    if slide.mpp is None:
        raise ConfigError(f"{slide.path}: slide has no mpp metadata; pass --slide-mpp (microns per level-0 pixel)")
    downsample = mpp / slide.mpp
    if downsample >= 1 - MPP_TOLERANCE:
        _, level, read_px, region_px0, stride_px0 = resolve_geometry(
            slide, TileConfig(tile_px=tile_px, mpp=mpp, overlap_px=cfg.overlap_px))
        return level, read_px, region_px0, stride_px0, False
    if not cfg.allow_resample:
        raise ConfigError(f"{slide.path}: the model needs {mpp:g} um/px but the slide's finest level is "
                          f"{slide.mpp:g} um/px (coarser); pass --allow-resample to upsample "
                          f"{1 / downsample:.2f}x (blurrier than what the model was trained on)")
    region_px0 = max(1, round(tile_px * downsample))
    stride_px0 = max(1, round((tile_px - cfg.overlap_px) * downsample))
    log.warning("%s: upsampling level 0 (%g um/px) %.2fx to %g um/px as --allow-resample asks",
                slide.slide_id, slide.mpp, 1 / downsample, mpp)
    return 0, region_px0, region_px0, stride_px0, True


def plan_tiles(slide, tile_px: int, mpp: float, cfg: SlidePredictConfig) -> TilePlan:
    from histoflow.tiling.extract import mask_view
    from histoflow.tiling.tissue import tissue_mask

    level, read_px, region_px0, stride_px0, resampled = tile_geometry(slide, tile_px, mpp, cfg)
    view, ds = mask_view(slide, TileConfig(tile_px=tile_px, mpp=mpp, mask_um_per_px=cfg.mask_um_per_px))
    mask = tissue_mask(view, ds, mpp=slide.mpp)
    w, h = slide.dimensions
    xs = np.arange(0, w - region_px0 + 1, stride_px0)
    ys = np.arange(0, h - region_px0 + 1, stride_px0)
    geom = GridGeometry(0, 0, stride_px0, region_px0, len(ys), len(xs))
    specs: list[TileSpec] = []
    if len(xs) and len(ys):
        frac = _window_fractions(mask, xs, ys, region_px0)
        keep = frac >= cfg.tissue_threshold if cfg.tissue_threshold > 0 else np.ones_like(frac, bool)
        for r, c in zip(*np.nonzero(keep)):
            specs.append(TileSpec(slide.path, slide.slide_id, int(xs[c]), int(ys[r]), level, read_px, region_px0,
                                  tile_px, mpp, round(float(frac[r, c]), 4), 0))
    if cfg.max_tiles is not None:
        specs = specs[: cfg.max_tiles]
    return TilePlan(specs, geom, mask.mask, ds, level, read_px, resampled)


# -- the model stage ----------------------------------------------------------------------------------
@dataclass
class ModelOutput:
    indices: np.ndarray                  # positions in the source that were scored
    probs: np.ndarray                    # (n, classes)
    features: np.ndarray | None          # (n, F) pooled backbone features when asked for
    errors: list[tuple[int, str]]
    model_s: float                       # time spent in the model
    wait_s: float                        # time the model waited for decoded tiles
    total_s: float


def device_of(cfg_device: str | None) -> torch.device:
    from histoflow.predict.patches import default_device

    return torch.device(cfg_device) if cfg_device else default_device()


@torch.inference_mode()
def run_model(model, source, tile_px: int, cfg: SlidePredictConfig, device: torch.device,
              want_features: bool = False, want_probs: bool = True, progress: bool = False,
              description: str = "tiles") -> ModelOutput:
    """Stream the source through the model; reader threads stay `prefetch` batches ahead."""
    from histoflow.data.transforms import dihedral_views
    from histoflow.predict.patches import autocast_for

    model = model.eval().to(device).to(memory_format=torch.channels_last)
    idx, probs, feats, errors = [], [], [], []
    model_s = wait_s = 0.0
    t0 = time.perf_counter()
    bar = _progress(progress, len(source), description)
    batches = stream_batches(source, tile_px, cfg.batch_size, cfg.workers, cfg.prefetch)
    while True:
        tw = time.perf_counter()
        batch = next(batches, None)
        wait_s += time.perf_counter() - tw
        if batch is None:
            break
        errors += batch.errors
        if bar:
            bar.update(len(batch.indices) + len(batch.errors))
        if not len(batch.indices):
            continue
        tm = time.perf_counter()
        x = torch.from_numpy(batch.images).permute(0, 3, 1, 2)  # NHWC view -> NCHW, no copy
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast_for(device):
            f = model.features(x)
            if want_probs:
                if cfg.tta:  # average over the 8 dihedral views (features stay the plain view's)
                    p = torch.stack([model.probabilities(model(v)) for v in dihedral_views(x)]).mean(0)
                else:
                    p = model.probabilities(model.head(f))
                probs.append(p.float().cpu().numpy())
        if want_features:
            feats.append(f.float().cpu().numpy())
        idx.append(batch.indices)
        model_s += time.perf_counter() - tm
    if bar:
        bar.close()
    n_cls = model.num_classes
    return ModelOutput(
        indices=np.concatenate(idx) if idx else np.zeros(0, np.int64),
        probs=np.concatenate(probs) if probs else np.zeros((0, n_cls), np.float32),
        features=(np.concatenate(feats) if feats else np.zeros((0, model.backbone.num_features), np.float32))
        if want_features else None,
        errors=errors, model_s=model_s, wait_s=wait_s, total_s=time.perf_counter() - t0)


def _progress(enabled: bool, total: int, description: str):
    import os

    if not enabled or os.environ.get("HISTOFLOW_QUIET"):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="tile", leave=False)


# -- tile sources -------------------------------------------------------------------------------------
def open_reader_factory(path: str, cfg: SlidePredictConfig):
    from histoflow.tiling.extract import _IN_MEMORY

    if path in _IN_MEMORY:  # in-memory slides (montages, tests) are shared, not reopened
        slide = _IN_MEMORY[path]
        return lambda: slide
    from histoflow.slide.open import open_slide

    return lambda: open_slide(path, backend=cfg.backend, mpp=cfg.slide_mpp)


def shard_tiles(tiles_dir: str | Path, slide_id: str, tile_px: int, mpp: float) -> tuple[dict, TilePlan, EncodedTileSource]:
    """Tiles of one slide from a `histoflow tile` run, checked against the model's resolution."""
    import pyarrow as pa

    from histoflow.tiling.shards import read_shard, slide_dir

    tiles_dir = Path(tiles_dir)
    report_path = slide_dir(tiles_dir, slide_id) / "report.json"
    files = sorted((tiles_dir / "shards" / slide_id).glob("part-*.parquet"))
    if not files or not report_path.is_file():
        raise DataError(f"{slide_id}: no complete tiles for this slide under {tiles_dir} (run `histoflow tile` first)")
    report = json.loads(report_path.read_text())
    table = pa.concat_tables([read_shard(f) for f in files])
    rows = table.to_pydict()
    if rows["tile_px"] and (rows["tile_px"][0] != tile_px or abs(rows["mpp"][0] - mpp) / mpp > MPP_TOLERANCE):
        raise ConfigError(f"{slide_id}: tiles in {tiles_dir} are {rows['tile_px'][0]} px at {rows['mpp'][0]:g} um/px; "
                          f"the model needs {tile_px} px at {mpp:g} um/px (re-tile, or predict from the slide file)")
    info = report.get("info", {})
    stride = int(info.get("stride_px0") or (rows["size_px0"][0] if rows["size_px0"] else 1))
    region = int(info.get("region_px0") or (rows["size_px0"][0] if rows["size_px0"] else 1))
    w, h = (info.get("levels") or [{"width": 0, "height": 0}])[0]["width"], (info.get("levels") or [{"height": 0}])[0]["height"]
    cols = max(1, (w - region) // stride + 1) if w else (max(rows["x"], default=0) // stride + 1)
    nrows = max(1, (h - region) // stride + 1) if h else (max(rows["y"], default=0) // stride + 1)
    specs = [TileSpec(str(tiles_dir), slide_id, x, y, -1, region, region, tile_px, mpp, tf, 0)
             for x, y, tf in zip(rows["x"], rows["y"], rows["tissue_fraction"])]
    plan = TilePlan(specs, GridGeometry(0, 0, stride, region, nrows, cols), None, 1.0, -1, region, False)
    return report, plan, EncodedTileSource(rows["image"], tile_px)


# -- one slide ----------------------------------------------------------------------------------------
@dataclass
class Predictor:
    """A loaded patch model (and optional MIL aggregator) with the settings of one run."""

    model: torch.nn.Module
    meta: dict
    cfg: SlidePredictConfig
    tile_px: int
    mpp: float
    fingerprint: str
    device: torch.device
    mil: object | None = None

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.meta["class_names"]]

    @property
    def positive(self) -> int:
        names = self.class_names
        if self.cfg.positive_class is None:
            return len(names) - 1
        if self.cfg.positive_class in names:
            return names.index(self.cfg.positive_class)
        raise ConfigError(f"positive class {self.cfg.positive_class!r} is not one of the checkpoint's classes {names}")


def load_predictor(checkpoint: str | Path, cfg: SlidePredictConfig) -> Predictor:
    from histoflow.checkpoint import load_checkpoint

    device = device_of(cfg.device)
    model, meta = load_checkpoint(checkpoint, device=device)
    tile_px, mpp = checkpoint_resolution(meta, cfg.mpp)
    fp = checkpoint_fingerprint(checkpoint)
    mil = None
    if cfg.mil_checkpoint:
        from histoflow.mil.model import load_mil

        mil, mil_meta = load_mil(cfg.mil_checkpoint)
        want = mil_meta.get("embedding", {}).get("checkpoint_fingerprint")
        if want and want != fp:
            raise CheckpointError(f"{cfg.mil_checkpoint}: MIL aggregator was trained on embeddings of another "
                                  f"checkpoint (fingerprint {want}, this one {fp}); embed with the same checkpoint")
    pred = Predictor(model, meta, cfg, tile_px, mpp, fp, device, mil)
    _ = pred.positive  # validate the class name now, before any slide
    return pred


SPEED_ONLY = ("batch_size", "workers", "prefetch", "device")  # change how fast, not what comes out


def run_fingerprint(pred: Predictor) -> str:
    cfg = {k: v for k, v in pred.cfg.to_dict().items() if k not in SPEED_ONLY}
    blob = json.dumps({"checkpoint": pred.fingerprint, "cfg": cfg, "tile_px": pred.tile_px,
                       "mpp": pred.mpp}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def is_complete(out_dir: Path, fingerprint: str) -> dict | None:
    p = out_dir / "slide.json"
    if not p.is_file():
        return None
    try:
        rep = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return rep if rep.get("status") in ("complete", "no_tissue") and rep.get("fingerprint") == fingerprint else None


def predict_slide(pred: Predictor, slide_path: str | Path, out: str | Path, progress: bool = False) -> dict:
    """Score one slide and write its outputs under OUT/<slide_id>/; returns the slide.json dict."""
    from histoflow.slide.base import slide_id_of
    from histoflow.tiling.extract import _IN_MEMORY

    cfg, t0 = pred.cfg, time.perf_counter()
    slide_path = str(slide_path)
    memory = _IN_MEMORY.get(slide_path)
    slide_id = memory.slide_id if memory is not None else slide_id_of(slide_path)
    out_dir = Path(out) / slide_id
    fp = run_fingerprint(pred)
    done = is_complete(out_dir, fp)
    if done:
        log.info("%s: already complete in %s (resume)", slide_id, out_dir)
        return {**done, "resumed": True}

    slide = open_reader_factory(slide_path, cfg)() if (memory is not None or Path(slide_path).exists()
                                                       or not cfg.tiles_dir) else None
    try:
        if cfg.tiles_dir:
            _, plan, source = shard_tiles(cfg.tiles_dir, slide_id, pred.tile_px, pred.mpp)
        else:
            plan = plan_tiles(slide, pred.tile_px, pred.mpp, cfg)
            source = SlideTileSource(slide_path, plan.specs, open_reader_factory(slide_path, cfg))
        plan_s = time.perf_counter() - t0
        try:
            res = run_model(pred.model, source, pred.tile_px, cfg, pred.device, want_features=pred.mil is not None,
                            progress=progress, description=slide_id)
        finally:
            source.close()
        report = _write_outputs(pred, slide, slide_id, slide_path, out_dir, plan, res)
    finally:
        if slide is not None and memory is None:
            slide.close()
    report["seconds"] = {"plan": round(plan_s, 3), "model": round(res.model_s, 3), "waiting_for_tiles": round(res.wait_s, 3),
                         "tiles_and_model": round(res.total_s, 3), "total": round(time.perf_counter() - t0, 3)}
    report["tiles_per_s"] = round(len(res.indices) / res.total_s, 1) if res.total_s > 0 else None
    report["fingerprint"] = fp
    atomic_write_json(out_dir / "slide.json", report)  # last: its presence marks the slide complete
    return report


def _write_outputs(pred: Predictor, slide, slide_id: str, slide_path: str, out_dir: Path, plan: TilePlan,
                   res: ModelOutput) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

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

    cols = {"tile_id": [s.tile_id for s in specs], "x": xs, "y": ys, "row": rows_i, "col": cols_i,
            "tissue_fraction": np.array([s.tissue_fraction for s in specs], np.float32)}
    for j, name in enumerate(names):
        cols[f"prob_{name}"] = res.probs[:, j].astype(np.float32)
    pos = res.probs[:, k] if len(res.probs) else np.zeros(0, np.float32)
    scores = all_scores(pos, cfg.aggregate)
    mil_out = None
    if pred.mil is not None and res.features is not None and len(res.features):
        from histoflow.mil.model import predict_bag

        mil_out = predict_bag(pred.mil, res.features)
        cols["attention"] = mil_out["attention"].astype(np.float32)
        scores["attention_mil"] = mil_out["score"]
    _atomic_parquet(out_dir / "tiles.parquet", pa.table(cols), pq)
    _atomic_npy(out_dir / "probabilities.npy", grid)

    n_err = len(res.errors)
    status = "complete" if specs else ("no_tissue" if not plan.specs else "failed")
    report = {
        "slide_id": slide_id, "slide": slide_path, "status": status, "checkpoint": pred.meta.get("path"),
        "class_names": names, "positive_class": names[k], "tile_px": pred.tile_px, "mpp": pred.mpp,
        "resampled": plan.resampled, "level": plan.level, "grid": geom.to_dict(),
        "tiles": {"planned": len(plan.specs), "scored": len(specs), "skipped_read_errors": n_err},
        "errors": [f"{plan.specs[i].tile_id}: {msg}" for i, msg in res.errors[:20]],
        "aggregation": cfg.aggregate.model_dump(),
        "score": scores["attention_mil"] if cfg.mil_checkpoint and "attention_mil" in scores else scores[cfg.aggregate.method],
        "score_method": "attention_mil" if cfg.mil_checkpoint and "attention_mil" in scores else cfg.aggregate.method,
        "scores": scores,
        "mean_probabilities": {n: (float(res.probs[:, j].mean()) if len(res.probs) else None) for j, n in enumerate(names)},
    }
    if mil_out is not None:
        report["mil"] = {"probabilities": mil_out["probabilities"], "prediction": mil_out["prediction"]}
    if status == "failed":
        report["error"] = f"{slide_id}: every one of {len(plan.specs)} tiles failed to read (first: {report['errors'][:1]})"
    if n_err:
        log.warning("%s: %d of %d tiles could not be read and were skipped (listed in slide.json)",
                    slide_id, n_err, len(plan.specs))
    _write_pictures(pred, slide, slide_id, out_dir, plan, grid[..., k], xs, ys, pos, report,
                    attention=None if mil_out is None else (rows_i, cols_i, mil_out["attention"]))
    return report


def _write_pictures(pred, slide, slide_id, out_dir, plan, values, xs, ys, pos, report, attention=None) -> None:
    cfg, geom = pred.cfg, plan.geom
    cls = f"{report['positive_class']} >= {cfg.aggregate.threshold:g}"
    write_geojson(out_dir / "regions.geojson", regions_geojson(values, geom, cfg.aggregate.threshold, cls))
    write_geojson(out_dir / "tiles.geojson", tiles_geojson(xs, ys, pos, geom.region_px0, cfg.aggregate.threshold, cls))
    thumb, ds, tissue = _thumbnail(slide, plan, cfg)
    if thumb is None:
        report["heatmap"] = "not written: no readable thumbnail (see the log)"
        return
    score = report["score"]
    title = (f"{slide_id}: {report['score_method']} = {'n/a' if score is None else f'{score:.3f}'}  "
             f"({report['tiles']['scored']} tiles, {report['tile_px']} px @ {report['mpp']:g} um/px)")
    render_heatmap(out_dir / "heatmap.png", thumb, ds, values, geom, tissue, title=title,
                   label=f"P({report['positive_class']})")
    if attention is not None:
        r, c, a = attention
        att = np.full((geom.rows, geom.cols), np.nan, np.float32)
        att[r, c] = a / a.max() if a.size and a.max() > 0 else a
        render_heatmap(out_dir / "attention.png", thumb, ds, att, geom, tissue,
                       title=f"{slide_id}: attention-MIL weights (scaled to max 1)", label="attention / max")


def _thumbnail(slide, plan: TilePlan, cfg: SlidePredictConfig):
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


def _atomic_parquet(path: Path, table, pq) -> None:
    from histoflow.tiling.shards import _tmp_name

    tmp = _tmp_name(path)
    try:
        pq.write_table(table, tmp)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


# -- many slides --------------------------------------------------------------------------------------
def predict_slides(checkpoint: str | Path, slides: Sequence[str | Path], out: str | Path,
                   cfg: SlidePredictConfig | None = None, progress: bool = True) -> dict:
    """Every slide in turn with one loaded model; a slide that fails is reported, not fatal."""
    cfg = cfg or SlidePredictConfig()
    pred = load_predictor(checkpoint, cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports, failed, t0 = {}, {}, time.perf_counter()
    for path in slides:
        try:
            rep = predict_slide(pred, path, out, progress=progress)
            reports[rep["slide_id"]] = rep
            if rep["status"] == "failed":
                failed[rep["slide_id"]] = rep["error"]
        except HistoflowError as exc:
            log.error("%s", exc)
            failed[str(path)] = str(exc)
    summary = {"out": str(out), "checkpoint": str(checkpoint), "tile_px": pred.tile_px, "mpp": pred.mpp,
               "device": str(pred.device), "slides": len(slides), "complete": len(reports) - sum(
                   r["status"] == "failed" for r in reports.values()), "failed": failed,
               "resumed": [s for s, r in reports.items() if r.get("resumed")],
               "scores": {s: r.get("score") for s, r in reports.items()},
               "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_json(out / "summary.json", {**summary, "config": cfg.to_dict()})
    return summary
