"""Where slide prediction gets its tiles: planned on the slide itself, or read from a tiling run.

Planning is tiling's (tiling.plan.slide_grid over tiling.grid): the same tissue mask and grid
`histoflow tile` makes, at the model's resolution, upsampled when the user allows it. This
module adds what prediction needs around it: the grid geometry for heatmaps, the tissue mask
for the picture, and errors that name the model's resolution.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histoflow.config.slides import SlidePredictConfig
from histoflow.config.tiling import TileConfig
from histoflow.core.errors import ConfigError, DataError
from histoflow.predict.heatmap import GridGeometry
from histoflow.predict.pipeline import EncodedTileSource
from histoflow.tiling.grid import MPP_TOLERANCE, TileSpec
from histoflow.tiling.readers import in_memory_slide


@dataclass
class TilePlan:
    specs: list[TileSpec]
    geom: GridGeometry
    tissue: np.ndarray | None  # mask at mask_downsample
    mask_downsample: float
    level: int
    read_px: int
    resampled: bool


def plan_tiles(slide, tile_px: int, mpp: float, cfg: SlidePredictConfig) -> TilePlan:
    """Tissue mask and tile grid of a slide at the model's resolution (tiling's planner)."""
    from histoflow.tiling.plan import slide_grid

    upsampled = slide.mpp is not None and mpp / slide.mpp < 1 - MPP_TOLERANCE
    if upsampled and not cfg.allow_resample:
        raise ConfigError(
            f"{slide.path}: the model needs {mpp:g} um/px but the slide's finest level is "
            f"{slide.mpp:g} um/px (coarser); pass --allow-resample to upsample "
            f"{slide.mpp / mpp:.2f}x (blurrier than what the model was trained on)"
        )
    tile_cfg = TileConfig(
        tile_px=tile_px,
        mpp=mpp,
        overlap_px=cfg.overlap_px,
        tissue_threshold=cfg.tissue_threshold,
        mask_um_per_px=cfg.mask_um_per_px,
    )
    _, mask, grid = slide_grid(slide, tile_cfg, allow_upsample=cfg.allow_resample)
    geom = GridGeometry(0, 0, grid.stride_px0, grid.region_px0, grid.rows, grid.cols)
    specs = grid.specs if cfg.max_tiles is None else grid.specs[: cfg.max_tiles]
    return TilePlan(specs, geom, mask.mask, mask.downsample, grid.level, grid.read_px, upsampled)


@contextmanager
def slide_reader(path: str, cfg: SlidePredictConfig) -> Iterator:
    """The slide opened for planning (and pictures), closed afterwards unless it is an
    in-memory slide, which every reader shares."""
    shared = in_memory_slide(path)
    if shared is not None:
        yield shared
        return
    from histoflow.slide.open import open_slide

    slide = open_slide(path, backend=cfg.backend, mpp=cfg.slide_mpp)
    try:
        yield slide
    finally:
        slide.close()


def open_reader_factory(path: str, cfg: SlidePredictConfig):
    """A function opening the slide (each reader thread opens its own; see predict.pipeline)."""
    slide = in_memory_slide(path)
    if slide is not None:  # in-memory slides (montages, tests) are shared, not reopened
        return lambda: slide
    from histoflow.slide.open import open_slide

    return lambda: open_slide(path, backend=cfg.backend, mpp=cfg.slide_mpp)


def shard_tiles(
    tiles_dir: str | Path, slide_id: str, tile_px: int, mpp: float
) -> tuple[dict, TilePlan, EncodedTileSource]:
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
        raise ConfigError(
            f"{slide_id}: tiles in {tiles_dir} are {rows['tile_px'][0]} px at {rows['mpp'][0]:g} um/px; "
            f"the model needs {tile_px} px at {mpp:g} um/px (re-tile, or predict from the slide file)"
        )
    info = report.get("info", {})
    stride = int(info.get("stride_px0") or (rows["size_px0"][0] if rows["size_px0"] else 1))
    region = int(info.get("region_px0") or (rows["size_px0"][0] if rows["size_px0"] else 1))
    w, h = (
        (info.get("levels") or [{"width": 0, "height": 0}])[0]["width"],
        (info.get("levels") or [{"height": 0}])[0]["height"],
    )
    cols = max(1, (w - region) // stride + 1) if w else (max(rows["x"], default=0) // stride + 1)
    nrows = max(1, (h - region) // stride + 1) if h else (max(rows["y"], default=0) // stride + 1)
    specs = [
        TileSpec(str(tiles_dir), slide_id, x, y, -1, region, region, tile_px, mpp, tf, 0)
        for x, y, tf in zip(rows["x"], rows["y"], rows["tissue_fraction"])
    ]
    plan = TilePlan(specs, GridGeometry(0, 0, stride, region, nrows, cols), None, 1.0, -1, region, False)
    return report, plan, EncodedTileSource(rows["image"], tile_px)
