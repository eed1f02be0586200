"""Tile embeddings from a frozen backbone, computed once and stored per slide (or bag).

    OUT/<slide_id>/embeddings.npy   (n_tiles, F) float32 pooled backbone features
    OUT/<slide_id>/tiles.parquet    tile_id, x, y, row, col (row i describes embeddings[i])
    OUT/<slide_id>/embed.json       grid geometry, checkpoint fingerprint, status (written last)

MIL training then reads a few MB per slide instead of decoding thousands of tiles per epoch.
The checkpoint fingerprint travels into the MIL checkpoint, so predict-slide can refuse a MIL
aggregator trained on another backbone's features.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from histoflow.config.slides import SlidePredictConfig
from histoflow.core.io import atomic_write_bytes, atomic_write_json
from histoflow.predict.model_loop import run_model
from histoflow.predict.outputs import write_parquet
from histoflow.predict.scale import ScaleOut, SlideJob, run_slides
from histoflow.predict.slide import Predictor, each_slide, load_predictor
from histoflow.predict.tiles import open_reader_factory, plan_tiles, shard_tiles
from histoflow.tiling.readers import slide_id_for

if TYPE_CHECKING:
    from histoflow.predict.pipeline import TileSource

log = logging.getLogger(__name__)


def save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def embed_slide(pred: Predictor, slide_path: str, out: Path, progress: bool = False) -> dict:
    import pyarrow as pa

    from histoflow.predict.pipeline import SlideTileSource

    cfg, t0 = pred.cfg, time.perf_counter()
    slide_id = slide_id_for(str(slide_path))
    out_dir = Path(out) / slide_id
    done = out_dir / "embed.json"
    if done.is_file():
        rep = json.loads(done.read_text())
        if rep.get("checkpoint_fingerprint") == pred.fingerprint and rep.get("status") == "complete":
            return {**rep, "resumed": True}
    source: TileSource
    if cfg.tiles_dir:
        _, plan, source = shard_tiles(cfg.tiles_dir, slide_id, pred.tile_px, pred.mpp)
    else:
        slide = open_reader_factory(str(slide_path), cfg)()
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
        "checkpoint": str(pred.checkpoint.path),
        "checkpoint_fingerprint": pred.fingerprint,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(done, rep)
    return rep


def embed_slides(
    checkpoint: str | Path,
    slides: Sequence[str | Path],
    out: str | Path,
    cfg: SlidePredictConfig | None = None,
    progress: bool = True,
    scale: ScaleOut | None = None,
) -> dict:
    """Embed every slide (resumable); a failing slide is reported, not fatal. `scale`: one worker
    process per device or one Spark task per slide (histoflow.predict.scale), same outputs."""
    cfg = cfg or SlidePredictConfig()
    spread = scale is not None and scale.spread
    pred = load_predictor(
        checkpoint, cfg, device="cpu" if spread else (scale.devices[0] if scale and scale.devices else None)
    )
    if scale is not None and spread:  # the workers load the model; this copy gives the fingerprint
        job = SlideJob(
            partial(load_predictor, str(checkpoint), cfg), embed_slide, {"out": Path(out).resolve()}, cfg.device
        )
        reports, failed = run_slides(job, slides, scale, progress=progress)
    else:
        reports, failed = each_slide(slides, lambda path: embed_slide(pred, str(path), Path(out), progress=progress))
    summary = {
        "out": str(out),
        "checkpoint_fingerprint": pred.fingerprint,
        "slides": len(slides),
        "complete": len(reports),
        "failed": failed,
        "resumed": [s for s, r in reports.items() if r.get("resumed")],
    }
    atomic_write_json(Path(out) / "embed_summary.json", summary)
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


def embed_images(pred: Predictor, paths: Sequence[str | Path], progress: bool = False) -> np.ndarray:
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
