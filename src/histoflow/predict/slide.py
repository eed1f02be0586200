"""Slide-level prediction: tiles streamed from the slide -> patch model -> grid, heatmap, score.

    OUT/<slide_id>/tiles.parquet        tile_id, x, y, row, col, tissue_fraction, prob_<class>... [, attention]
    OUT/<slide_id>/probabilities.npy    (rows, cols, classes) float32, NaN where no tile was scored
    OUT/<slide_id>/heatmap.png          slide | positive-class probability per tile, colour bar, scale bar
    OUT/<slide_id>/regions.geojson      connected regions >= threshold (QuPath: File > Import objects)
    OUT/<slide_id>/tiles.geojson        every scored tile as a QuPath detection, P(<class>) as measurements
    OUT/<slide_id>/slide.json           slide-level scores, counts, skipped tiles and why, timings
    OUT/<slide_id>/attention.png        learned aggregator's weights, when one is given (attention MIL)

slide.json is written last and atomically: a slide whose slide.json says `complete` (with the
same checkpoint and settings) is skipped on a re-run, so an interrupted batch resumes where it
stopped. Tiles come from the slide itself (tissue mask + grid at the checkpoint's resolution,
predict.tiles) or from an existing tiling run (`tiles_dir`, shards written by `histoflow tile`).
This module runs one slide and many; the stages live beside it: predict.checkpoint_info,
predict.tiles, predict.model_loop, predict.outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from histoflow.checkpoint import Checkpoint, load_checkpoint
from histoflow.config.slides import SlidePredictConfig
from histoflow.core.errors import ConfigError
from histoflow.core.io import atomic_write_json
from histoflow.predict.aggregate import TileAggregator
from histoflow.predict.checkpoint_info import checkpoint_resolution
from histoflow.predict.model_loop import device_of, run_model
from histoflow.predict.outputs import write_outputs
from histoflow.predict.pipeline import SlideTileSource, TileSource
from histoflow.predict.scale import ScaleOut, SlideJob, each_slide, run_slides
from histoflow.predict.tiles import open_reader_factory, plan_tiles, shard_tiles
from histoflow.tiling.read import PIXELS_VERSION
from histoflow.tiling.readers import in_memory_slide, slide_id_for

__all__ = [
    "Predictor",
    "each_slide",
    "is_complete",
    "load_predictor",
    "predict_slide",
    "predict_slides",
    "run_fingerprint",
]
log = logging.getLogger(__name__)


@dataclass
class Predictor:
    """A loaded patch model (and optional learned aggregator) with the settings of one run."""

    model: torch.nn.Module
    checkpoint: Checkpoint
    cfg: SlidePredictConfig
    tile_px: int
    mpp: float
    fingerprint: str
    device: torch.device
    aggregator: TileAggregator | None = None

    @property
    def class_names(self) -> list[str]:
        return self.checkpoint.class_names

    @property
    def positive(self) -> int:
        names = self.class_names
        if self.cfg.positive_class is None:  # binary: the checkpoint's positive class; else the last
            positive = self.checkpoint.positive_class
            return names.index(positive) if positive is not None else len(names) - 1
        if self.cfg.positive_class in names:
            return names.index(self.cfg.positive_class)
        raise ConfigError(f"positive class {self.cfg.positive_class!r} is not one of the checkpoint's classes {names}")


def load_predictor(
    checkpoint: str | Path,
    cfg: SlidePredictConfig,
    aggregator: TileAggregator | None = None,
    device: str | None = None,
) -> Predictor:
    """The patch model of `checkpoint` on `device` (default: the configured one); `aggregator`
    is checked against it."""
    torch_device = device_of(device or cfg.device)
    model, ckpt = load_checkpoint(checkpoint, device=torch_device)
    tile_px, mpp = checkpoint_resolution(ckpt, cfg.mpp)
    if aggregator is not None:
        aggregator.check_backbone(ckpt.fingerprint)
    pred = Predictor(model, ckpt, cfg, tile_px, mpp, ckpt.fingerprint, torch_device, aggregator)
    _ = pred.positive  # validate the class name now, before any slide
    return pred


SPEED_ONLY = ("batch_size", "workers", "prefetch", "device")  # change how fast, not what comes out


def settings_fingerprint(
    model_fingerprint: str, cfg: SlidePredictConfig, tile_px: int, mpp: float, ignore: Sequence[str] = ()
) -> str:
    """What a slide's outputs depend on: the model, every setting but the SPEED_ONLY ones and
    `ignore`, the tile geometry, and how tile pixels are resampled (tiling.read.PIXELS_VERSION).
    A resumed run reuses a slide's outputs only when this is unchanged."""
    kept = {k: v for k, v in cfg.to_dict().items() if k not in SPEED_ONLY and k not in ignore}
    blob = json.dumps(
        {"checkpoint": model_fingerprint, "cfg": kept, "tile_px": tile_px, "mpp": mpp, "pixels": PIXELS_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def run_fingerprint(pred: Predictor) -> str:
    return settings_fingerprint(pred.fingerprint, pred.cfg, pred.tile_px, pred.mpp)


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
    cfg, t0 = pred.cfg, time.perf_counter()
    slide_path = str(slide_path)
    memory = in_memory_slide(slide_path)
    slide_id = slide_id_for(slide_path)
    out_dir = Path(out) / slide_id
    fp = run_fingerprint(pred)
    done = is_complete(out_dir, fp)
    if done:
        log.info("%s: already complete in %s (resume)", slide_id, out_dir)
        return {**done, "resumed": True}

    slide = (
        open_reader_factory(slide_path, cfg)()
        if (memory is not None or Path(slide_path).exists() or not cfg.tiles_dir)
        else None
    )
    source: TileSource
    try:
        if cfg.tiles_dir:
            _, plan, source = shard_tiles(cfg.tiles_dir, slide_id, pred.tile_px, pred.mpp)
        else:
            plan = plan_tiles(slide, pred.tile_px, pred.mpp, cfg)
            source = SlideTileSource(slide_path, plan.specs, open_reader_factory(slide_path, cfg))
        plan_s = time.perf_counter() - t0
        try:
            res = run_model(
                pred.model,
                source,
                pred.tile_px,
                cfg,
                pred.device,
                want_features=pred.aggregator is not None,
                progress=progress,
                description=slide_id,
            )
        finally:
            source.close()
        report = write_outputs(pred, slide, slide_id, slide_path, out_dir, plan, res)
    finally:
        if slide is not None and memory is None:
            slide.close()
    report["seconds"] = {
        "plan": round(plan_s, 3),
        "model": round(res.model_s, 3),
        "waiting_for_tiles": round(res.wait_s, 3),
        "tiles_and_model": round(res.total_s, 3),
        "total": round(time.perf_counter() - t0, 3),
    }
    report["tiles_per_s"] = round(len(res.indices) / res.total_s, 1) if res.total_s > 0 else None
    report["fingerprint"] = fp
    atomic_write_json(out_dir / "slide.json", report)  # last: its presence marks the slide complete
    return report


# -- many slides --------------------------------------------------------------------------------------
def predict_slides(
    checkpoint: str | Path,
    slides: Sequence[str | Path],
    out: str | Path,
    cfg: SlidePredictConfig | None = None,
    progress: bool = True,
    aggregator: TileAggregator | None = None,
    scale: ScaleOut | None = None,
) -> dict:
    """Every slide in turn with one loaded model; a slide that fails is reported, not fatal.

    `aggregator` adds a learned slide score from tile features (histoflow.mil.apply builds one
    from `cfg.mil_checkpoint`: see predict_slides_with_mil). `scale`: one worker process per
    device, or one Spark task per slide (predict.scale); the outputs are the same."""
    cfg = cfg or SlidePredictConfig()
    if cfg.mil_checkpoint and aggregator is None:
        raise ConfigError(
            "mil_checkpoint is applied by histoflow.mil: call "
            "histoflow.mil.apply.predict_slides_with_mil (or pass aggregator=MilAggregator.load(...))"
        )
    spread = scale is not None and scale.spread
    # spread out, the workers load the model: this copy (on the CPU) checks the settings and
    # gives the summary its resolution and classes
    pred = load_predictor(checkpoint, cfg, aggregator, device=scale.here_device() if scale else None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if scale is not None and spread:
        load = partial(load_predictor, str(checkpoint), cfg, aggregator)
        job = SlideJob(load, predict_slide, {"out": str(out.resolve())}, device=cfg.device)
        reports, failed = run_slides(job, slides, scale, progress=progress)
    else:
        reports, failed = each_slide(slides, lambda path: predict_slide(pred, path, out, progress=progress))
    summary = {
        "out": str(out),
        "checkpoint": str(checkpoint),
        "tile_px": pred.tile_px,
        "mpp": pred.mpp,
        "device": scale.describe() if scale is not None and spread else str(pred.device),
        "positive_class": pred.class_names[pred.positive],  # what every score is the probability of
        "slides": len(slides),
        "complete": len(reports) - sum(r["status"] == "failed" for r in reports.values()),
        "failed": failed,
        "resumed": [s for s, r in reports.items() if r.get("resumed")],
        "scores": {s: r.get("score") for s, r in reports.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    atomic_write_json(out / "summary.json", {**summary, "config": cfg.to_dict()})
    return summary
