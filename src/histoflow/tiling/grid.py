"""Tile grids at a physical resolution, and the small picklable TileSpec they are made of.

TileConfig (the schema) lives in histoflow.config.tiling and is re-exported here.

A tile is requested as `tile_px` output pixels at `mpp` microns per pixel (or `tile_um`, or
a magnification). The grid lives in level-0 pixels; each tile is read from the pyramid level
just finer than the requested resolution and resized to `tile_px` (tiling.read: area
interpolation, or a box average and a small interpolation near whole factors), which
is what a pathologist's "256 px at 0.5 um/px" means whatever the scanner's native resolution.

This is the one tile planner: the tiling engines and slide prediction (predict.tiles) both
plan here. Prediction may ask to upsample (`allow_upsample`) a slide coarser than its model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from histoflow.config.tiling import TileConfig
from histoflow.core.errors import ConfigError, DataError
from histoflow.tiling.tissue import TissueMask

__all__ = [
    "MPP_TOLERANCE",
    "Grid",
    "TileConfig",
    "TileSpec",
    "resolve_geometry",
    "tile_grid",
    "tile_id",
    "window_fractions",
]
log = logging.getLogger(__name__)
MPP_TOLERANCE = 0.02  # up to 2% finer than level 0 is scanner rounding (0.5 vs 0.499), not upsampling
BOX_RESIDUAL = 0.1  # box-then-interpolate when read_px / tile_px is within 10% of a whole number >= 2


def box_factor(read_px: int, tile_px: int) -> int:
    """The whole-number box reduction tiling.read does before a small final resize, or 1 for
    none (there: why, and the other paths)."""
    r = read_px / tile_px
    f = round(r)
    if f < 2 or read_px == f * tile_px or abs(r / f - 1) > BOX_RESIDUAL:
        return 1
    return f


class TileSpec(NamedTuple):
    """One tile: small, picklable, enough for any worker to read it from the slide file."""

    slide: str  # path (or "<array ...>" for in-memory slides)
    slide_id: str
    x: int  # level-0 top-left
    y: int
    level: int  # pyramid level read from
    read_px: int  # side of the region read at `level`
    size_px0: int  # side of the tile in level-0 px
    tile_px: int  # side of the output image
    mpp: float  # output microns per pixel
    tissue_fraction: float
    shard: int  # index of the Parquet shard of its slide this tile goes to

    @property
    def tile_id(self) -> str:
        return tile_id(self.slide_id, self.x, self.y, self.tile_px, self.mpp)


def tile_id(slide_id: str, x: int, y: int, tile_px: int, mpp: float) -> str:
    return f"{slide_id}_{x}_{y}_{tile_px}px_{mpp:g}mpp"


@dataclass
class Grid:
    """The candidate grid of one slide and which tiles passed the tissue threshold."""

    slide_id: str
    mpp: float
    level: int
    region_px0: int  # tile side in level-0 px
    stride_px0: int
    n_candidates: int
    specs: list[TileSpec] = field(default_factory=list)
    rejected_tissue: int = 0
    rows: int = 0  # candidate grid shape (rows x cols = n_candidates)
    cols: int = 0
    read_px: int = 0  # side of the region read at `level` for each tile


def resolve_geometry(slide, cfg: TileConfig, allow_upsample: bool = False) -> tuple[float, int, int, int, int]:
    """(output mpp, level, read_px, region_px0, stride_px0) for this slide, or a ConfigError.

    A slide coarser than the requested mpp is an error, unless `allow_upsample`: then level 0
    is read over the tile's physical area and resized up to tile_px (blurrier than a native
    read; slide prediction offers it as --allow-resample)."""
    name = slide.slide_id
    if slide.mpp is None and (cfg.mpp is not None or cfg.tile_um is not None or cfg.magnification is not None):
        raise ConfigError(
            f"{name}: slide has no mpp metadata; pass --slide-mpp (microns per level-0 pixel) "
            "so tiles have a known physical size"
        )
    mpp = cfg.target_mpp(slide.mpp, slide.objective_power, name)
    downsample = mpp / slide.mpp
    if downsample < 1 - MPP_TOLERANCE and allow_upsample:
        region_px0 = max(1, round(cfg.tile_px * downsample))
        stride_px0 = max(1, round((cfg.tile_px - cfg.overlap_px) * downsample))
        log.warning(
            "%s: upsampling level 0 (%g um/px) %.2fx to %g um/px as --allow-resample asks",
            name,
            slide.mpp,
            1 / downsample,
            mpp,
        )
        return mpp, 0, region_px0, region_px0, stride_px0
    if downsample < 1 - MPP_TOLERANCE:
        raise ConfigError(
            f"{name}: requested {mpp:g} um/px is finer than the slide's level 0 ({slide.mpp:g} um/px); "
            f"request mpp >= {slide.mpp:g}"
        )
    level = slide.best_level_for_downsample(max(downsample, 1.0))
    region_px0 = max(1, round(cfg.tile_px * downsample))
    read_px = max(1, round(region_px0 / slide.level_downsamples[level]))
    if abs(read_px - cfg.tile_px) <= 1 and abs(downsample / slide.level_downsamples[level] - 1) < 0.01:
        read_px = cfg.tile_px  # level already at the requested resolution: no resampling
    stride_px0 = max(1, round((cfg.tile_px - cfg.overlap_px) * downsample))
    f = box_factor(read_px, cfg.tile_px)
    if f > 1 and stride_px0 < region_px0:
        # overlapping tiles on whole box cells share one box reduction per block read (tiling.read);
        # the stride moves by under f level px
        unit = f * max(1, round(slide.level_downsamples[level]))
        stride_px0 = max(unit, unit * round(stride_px0 / unit))
    w, h = slide.dimensions
    if region_px0 > w or region_px0 > h:
        raise DataError(
            f"{name}: a {cfg.tile_px} px tile at {mpp:g} um/px covers {region_px0} level-0 px, "
            f"larger than the slide ({w}x{h})"
        )
    return mpp, level, read_px, region_px0, stride_px0


def tile_grid(slide, mask: TissueMask, cfg: TileConfig, allow_upsample: bool = False) -> Grid:
    """Every full tile of the grid, kept when its tissue fraction reaches the threshold."""
    mpp, level, read_px, region_px0, stride_px0 = resolve_geometry(slide, cfg, allow_upsample)
    w, h = slide.dimensions
    xs = np.arange(0, w - region_px0 + 1, stride_px0)
    ys = np.arange(0, h - region_px0 + 1, stride_px0)
    fractions = window_fractions(mask, xs, ys, region_px0)
    grid = Grid(
        slide.slide_id,
        mpp,
        level,
        region_px0,
        stride_px0,
        n_candidates=len(xs) * len(ys),
        rows=len(ys),
        cols=len(xs),
        read_px=read_px,
    )
    keep = fractions >= cfg.tissue_threshold
    if cfg.tissue_threshold == 0:
        keep[:] = True
    grid.rejected_tissue = int((~keep).sum())
    iy, ix = np.nonzero(keep)  # row-major: tiles come out top to bottom, left to right
    for n, (r, c) in enumerate(zip(iy, ix)):
        grid.specs.append(
            TileSpec(
                slide.path,
                slide.slide_id,
                int(xs[c]),
                int(ys[r]),
                level,
                read_px,
                region_px0,
                cfg.tile_px,
                mpp,
                round(float(fractions[r, c]), 4),
                n // cfg.tiles_per_shard,
            )
        )
    return grid


def window_fractions(mask: TissueMask, xs: np.ndarray, ys: np.ndarray, size_px0: int) -> np.ndarray:
    """Tissue fraction of every grid window, from one integral image of the mask."""
    m = mask.mask.astype(np.float64)
    integral = np.zeros((m.shape[0] + 1, m.shape[1] + 1))
    integral[1:, 1:] = m.cumsum(0).cumsum(1)
    d = mask.downsample

    def bounds(starts, limit):
        a = np.clip(np.floor(starts / d).astype(int), 0, limit - 1)
        b = np.clip(np.ceil((starts + size_px0) / d).astype(int), a + 1, limit)
        return a, b

    x0, x1 = bounds(xs, m.shape[1])
    y0, y1 = bounds(ys, m.shape[0])
    s = integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0]
    area = np.outer(y1 - y0, x1 - x0)
    return s / area
