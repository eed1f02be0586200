"""Tile embeddings from a frozen backbone, computed once and stored per slide (or bag).

    OUT/<slide_id>/embeddings.npy   (n_tiles, F) float32 pooled backbone features
    OUT/<slide_id>/tiles.parquet    tile_id, x, y, row, col (row i describes embeddings[i])
    OUT/<slide_id>/embed.json       grid geometry, what embedded it, status (written last)

The features come from a trained patch classifier's backbone (`--checkpoint`) or from a
registered encoder (`--encoder uni --weights PATH`, histoflow.models.encoders). embed.json
records which: the checkpoint's fingerprint, or the encoder's name and its weights file's
sha256 ('random' / 'hub' when there is no file), with the tile size and mpp. MIL training reads
a few MB per slide instead of decoding thousands of tiles per epoch, refuses to mix slides
embedded differently, and carries the record into the MIL checkpoint, so predict-slide can
refuse a MIL aggregator trained on another backbone's features.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from histoflow.config.slides import SlidePredictConfig
from histoflow.core.errors import ConfigError
from histoflow.core.io import atomic_write_bytes, atomic_write_json
from histoflow.predict.model_loop import device_of, run_model
from histoflow.predict.outputs import write_parquet
from histoflow.predict.scale import ScaleOut, SlideJob, run_slides
from histoflow.predict.slide import Predictor, each_slide, load_predictor, settings_fingerprint
from histoflow.predict.tiles import open_reader_factory, plan_tiles, shard_tiles, slide_reader
from histoflow.tiling.readers import slide_id_for

if TYPE_CHECKING:
    from histoflow.predict.pipeline import TileSource

log = logging.getLogger(__name__)
# Slide-prediction settings that change scores or pictures, not embeddings: a change to them
# keeps a slide's embeddings (every other setting, bar the speed-only ones, redoes it).
NOT_IN_EMBEDDINGS = ("tta", "positive_class", "aggregate", "mil_checkpoint", "thumbnail_px")


def save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class Embedder:
    """A frozen feature extractor with the resolution it embeds at and a record of what it is.

    `model` is a Classifier (only its `features` are used); `record` goes into every embed.json
    and, through MIL training, into the MIL checkpoint; `fingerprint` identifies it in one string."""

    model: torch.nn.Module
    cfg: SlidePredictConfig
    tile_px: int
    mpp: float
    device: torch.device
    fingerprint: str
    record: dict = field(default_factory=dict)
    # builds this embedder again on a given device (`rebuild(device=...)`), picklable: how worker
    # processes and Spark tasks load it (histoflow.predict.scale)
    rebuild: Callable[..., Embedder] | None = None


def checkpoint_embedder(pred: Predictor) -> Embedder:
    """A trained patch classifier's backbone (`histoflow embed --checkpoint`)."""
    record = {"checkpoint": str(pred.checkpoint.path), "checkpoint_fingerprint": pred.fingerprint}
    rebuild = partial(checkpoint_embedder_on, str(pred.checkpoint.path), pred.cfg)
    return Embedder(pred.model, pred.cfg, pred.tile_px, pred.mpp, pred.device, pred.fingerprint, record, rebuild)


def checkpoint_embedder_on(checkpoint: str, cfg: SlidePredictConfig, device: str | None = None) -> Embedder:
    """checkpoint_embedder of a checkpoint file loaded on `device` (None: cfg's, else the default)."""
    return checkpoint_embedder(load_predictor(checkpoint, cfg, device=device))


def encoder_embedder(
    name: str,
    weights: str | Path | None,
    cfg: SlidePredictConfig,
    tile_px: int | None = None,
    resolution_policy: str = "warn",
) -> Embedder:
    """A registered encoder with its weights (`histoflow embed --encoder NAME --weights PATH`).

    Tiles default to the encoder's own size and mpp; others are warned about or refused
    (`resolution_policy`) before any weights are read."""
    from histoflow.models.classifier import Classifier
    from histoflow.models.encoder_backbone import build_encoder
    from histoflow.models.encoders import check_resolution, get_encoder_spec

    spec = get_encoder_spec(name)
    tile_px = int(tile_px or spec.tile_px)
    mpp = cfg.mpp or spec.embed_mpp
    if mpp is None:
        raise ConfigError(f"encoder {name!r} records no mpp: pass --mpp")
    check_resolution(spec, tile_px, mpp, resolution_policy)
    backbone, source = build_encoder(name, weights)
    if source.kind == "random":
        log.warning("encoder %r: random weights, as asked: its features mean nothing (tests, benchmarks)", name)
    sha = source.sha256()
    record = {
        "encoder": name,
        "encoder_arch": spec.arch,
        "weights": source.label,
        "weights_sha256": sha,
        "tile_px": tile_px,
        "mpp": float(mpp),
        "pooling": spec.pooling,
        "model_card": spec.card,
    }
    fingerprint = hashlib.sha1(f"{name}:{sha}".encode()).hexdigest()[:16]
    model = Classifier(backbone, 2, mean=spec.mean, std=spec.std).eval()  # the head is never used
    rebuild = partial(
        encoder_embedder_on, name, None if weights is None else str(weights), cfg, tile_px, resolution_policy
    )
    return Embedder(model, cfg, tile_px, float(mpp), device_of(cfg.device), fingerprint, record, rebuild)


def encoder_embedder_on(
    name: str,
    weights: str | None,
    cfg: SlidePredictConfig,
    tile_px: int | None,
    resolution_policy: str,
    device: str | None = None,
) -> Embedder:
    """encoder_embedder on `device` (None: cfg's): what a worker process or Spark task loads."""
    cfg = cfg if device is None else cfg.model_copy(update={"device": device})
    return encoder_embedder(name, weights, cfg, tile_px, resolution_policy)


def embed_slide(emb: Embedder | Predictor, slide_path: str, out: Path, progress: bool = False) -> dict:
    import pyarrow as pa

    from histoflow.predict.pipeline import SlideTileSource

    pred = emb if isinstance(emb, Embedder) else checkpoint_embedder(emb)
    cfg, t0 = pred.cfg, time.perf_counter()
    slide_id = slide_id_for(str(slide_path))
    out_dir = Path(out) / slide_id
    done = out_dir / "embed.json"
    fp = settings_fingerprint(pred.fingerprint, cfg, pred.tile_px, pred.mpp, ignore=NOT_IN_EMBEDDINGS)
    if done.is_file():
        rep = json.loads(done.read_text())
        if rep.get("settings_fingerprint") == fp and rep.get("status") == "complete":
            return {**rep, "resumed": True}
    source: TileSource
    if cfg.tiles_dir:
        _, plan, source = shard_tiles(cfg.tiles_dir, slide_id, pred.tile_px, pred.mpp)
    else:
        with slide_reader(str(slide_path), cfg) as slide:
            plan = plan_tiles(slide, pred.tile_px, pred.mpp, cfg)
        source = SlideTileSource(str(slide_path), plan.specs, open_reader_factory(str(slide_path), cfg))
    try:
        res = run_model(
            pred.model,
            source,
            pred.tile_px,
            cfg,
            pred.device,
            want_features=True,
            want_probs=False,
            progress=progress,
            description=f"embed {slide_id}",
        )
    finally:
        source.close()
    specs = [plan.specs[i] for i in res.indices]
    g = plan.geom
    xs = np.array([s.x for s in specs], np.int64)
    ys = np.array([s.y for s in specs], np.int64)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = cast(np.ndarray, res.features)  # run with want_features=True
    save_npy(out_dir / "embeddings.npy", features.astype(np.float32))
    write_parquet(
        out_dir / "tiles.parquet",
        pa.table(
            {
                "tile_id": [s.tile_id for s in specs],
                "x": xs,
                "y": ys,
                "row": (ys - g.y0) // g.stride_px0,
                "col": (xs - g.x0) // g.stride_px0,
            }
        ),
    )
    rep = {
        "slide_id": slide_id,
        "slide": str(slide_path),
        "status": "complete",
        "tiles": len(specs),
        "skipped_read_errors": len(res.errors),
        "errors": [m for _, m in res.errors[:20]],
        "features": int(features.shape[1]),
        "tile_px": pred.tile_px,
        "mpp": pred.mpp,
        "grid": g.to_dict(),
        **pred.record,
        "embedding_fingerprint": pred.fingerprint,
        "settings_fingerprint": fp,  # the embedder, tiling settings and pixels version: the resume key
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(done, rep)
    return rep


def embed_slides(
    checkpoint: str | Path | Embedder,
    slides: Sequence[str | Path],
    out: str | Path,
    cfg: SlidePredictConfig | None = None,
    progress: bool = True,
    scale: ScaleOut | None = None,
) -> dict:
    """Embed every slide (resumable) with a checkpoint's backbone or an `Embedder` (see
    `encoder_embedder`); a failing slide is reported, not fatal. `scale`: one worker process per
    device or one Spark task per slide (histoflow.predict.scale), same outputs."""
    cfg = cfg or SlidePredictConfig()
    spread = scale is not None and scale.spread
    if isinstance(checkpoint, Embedder):
        pred = checkpoint
    else:
        pred = checkpoint_embedder_on(str(checkpoint), cfg, device=scale.here_device() if scale else None)
    if scale is not None and spread:  # the workers load the model; this copy gives the fingerprint
        if pred.rebuild is None:
            raise ConfigError("this embedder cannot be rebuilt in worker processes; build it with encoder_embedder")
        job = SlideJob(pred.rebuild, embed_slide, {"out": Path(out).resolve()}, cfg.device)
        reports, failed = run_slides(job, slides, scale, progress=progress)
    else:
        reports, failed = each_slide(slides, lambda path: embed_slide(pred, str(path), Path(out), progress=progress))
    summary = {
        "out": str(out),
        **pred.record,
        "embedding_fingerprint": pred.fingerprint,
        "slides": len(slides),
        "complete": len(reports),
        "failed": failed,
        "resumed": [s for s, r in reports.items() if r.get("resumed")],
    }
    atomic_write_json(Path(out) / "embed_summary.json", {**summary, "embedding": pred.record})
    return summary


class ImageFileSource:
    """Patch image files as a tile source (PCam folders): decoded in the reader threads."""

    def __init__(self, paths: Sequence[str | Path], tile_px: int):
        self.paths, self.tile_px = [str(p) for p in paths], tile_px

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> np.ndarray:
        from histoflow.core.images import read_image
        from histoflow.data.datasets import fit_size

        return fit_size(read_image(self.paths[i]), self.tile_px, "resize", self.paths[i])

    def close(self) -> None:
        pass


def embed_images(pred: Embedder | Predictor, paths: Sequence[str | Path], progress: bool = False) -> np.ndarray:
    """(N, F) features of image files, in order; an unreadable file is an error naming it."""
    from histoflow.core.errors import DataError

    res = run_model(
        pred.model,
        ImageFileSource(paths, pred.tile_px),
        pred.tile_px,
        pred.cfg,
        pred.device,
        want_features=True,
        want_probs=False,
        progress=progress,
        description="embed patches",
    )
    if res.errors:
        raise DataError(f"{len(res.errors)} patch(es) could not be read, first: {res.errors[0][1]}")
    return cast(np.ndarray, res.features)  # run with want_features=True
