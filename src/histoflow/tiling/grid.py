"""Tile grids at a physical resolution, and the small picklable TileSpec they are made of.

A tile is requested as `tile_px` output pixels at `mpp` microns per pixel (or `tile_um`, or
a magnification). The grid lives in level-0 pixels; each tile is read from the pyramid level
just finer than the requested resolution and resized (area interpolation) to `tile_px`, which
is what a pathologist's "256 px at 0.5 um/px" means whatever the scanner's native resolution.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

import numpy as np

from histoflow.core.errors import ConfigError, DataError
from histoflow.tiling.tissue import METHODS, TissueMask

log = logging.getLogger(__name__)
MPP_TOLERANCE = 0.02  # up to 2% finer than level 0 is scanner rounding (0.5 vs 0.499), not upsampling
FORMATS = ("jpeg", "png")
ON_TILE_ERROR = ("fail", "skip")


@dataclass(frozen=True)
class TileConfig:
    """Everything that decides which tiles a slide gives and what their pixels are."""

    tile_px: int = 256
    mpp: float | None = None             # output microns per pixel (0.5 when no tile_um/magnification)
    tile_um: float | None = None         # alternative: physical tile side (mpp = tile_um / tile_px)
    magnification: float | None = None   # alternative: e.g. 20 (uses the slide's objective power)
    overlap_px: int = 0                  # output px shared by neighbours (stride = tile_px - overlap_px)
    tissue_threshold: float = 0.5        # keep tiles with at least this tissue fraction
    tissue_method: str = "saturation"    # saturation | od
    mask_um_per_px: float = 4.0          # resolution of the tissue mask view
    min_tissue_um2: float = 5000.0       # drop tissue specks smaller than this
    reject_pen: bool = True
    whitespace_max: float | None = 0.8   # QC: reject tiles with more than this fraction of glass pixels
    blur_min: float | None = None        # QC: reject tiles whose Laplacian variance is below this
    image_format: str = "jpeg"
    jpeg_quality: int = 90
    tiles_per_shard: int = 256
    slide_mpp: float | None = None       # override/supply the slides' level-0 mpp
    backend: str = "auto"
    on_tile_error: str = "fail"          # fail: the slide fails; skip: the tile is rejected and counted

    def __post_init__(self):
        if self.mpp is None and self.tile_um is None and self.magnification is None:
            object.__setattr__(self, "mpp", 0.5)  # the field's usual resolution (20x on most scanners)
        if not isinstance(self.tile_px, int) or self.tile_px < 8:
            raise ConfigError(f"tile_px must be an integer >= 8, got {self.tile_px!r}")
        given = [n for n in ("mpp", "tile_um", "magnification") if getattr(self, n) is not None]
        if len(given) > 1 and not (given == ["mpp", "tile_um"] and self.derived_mpp_matches()):
            raise ConfigError(f"give one of mpp, tile_um or magnification, got {given}")
        for name in ("mpp", "tile_um", "magnification", "slide_mpp"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"{name} must be > 0, got {v!r}")
        if not 0 <= self.overlap_px < self.tile_px:
            raise ConfigError(f"overlap_px must be in [0, tile_px), got {self.overlap_px}")
        if not 0 <= self.tissue_threshold <= 1:
            raise ConfigError(f"tissue_threshold must be in [0, 1], got {self.tissue_threshold}")
        if self.tissue_method not in METHODS:
            raise ConfigError(f"tissue_method must be one of {METHODS}, got {self.tissue_method!r}")
        if self.image_format not in FORMATS:
            raise ConfigError(f"image_format must be one of {FORMATS}, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.tiles_per_shard < 1:
            raise ConfigError(f"tiles_per_shard must be >= 1, got {self.tiles_per_shard}")
        if self.on_tile_error not in ON_TILE_ERROR:
            raise ConfigError(f"on_tile_error must be one of {ON_TILE_ERROR}, got {self.on_tile_error!r}")
        if self.whitespace_max is not None and not 0 <= self.whitespace_max <= 1:
            raise ConfigError(f"whitespace_max must be in [0, 1], got {self.whitespace_max}")

    def derived_mpp_matches(self) -> bool:
        return self.mpp is not None and self.tile_um is not None and math.isclose(self.mpp, self.tile_um / self.tile_px, rel_tol=1e-6)

    def target_mpp(self, slide_mpp: float | None, objective_power: float | None, slide: str) -> float:
        """The output mpp for one slide."""
        if self.tile_um is not None:
            return self.tile_um / self.tile_px
        if self.mpp is not None:
            return self.mpp
        if self.magnification is not None:
            if slide_mpp is None:
                raise ConfigError(f"{slide}: no mpp metadata; pass --slide-mpp to tile it at a magnification")
            if not objective_power:
                raise ConfigError(f"{slide}: no objective power in the metadata; request --mpp instead of a magnification")
            return round(slide_mpp * objective_power / self.magnification, 6)
        raise ConfigError("give one of mpp, tile_um or magnification")

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """Hash of the fields that change tile ids or pixels (resume refuses a different config)."""
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict) -> "TileConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown tile config key(s) {sorted(unknown)}")
        return cls(**d)


class TileSpec(NamedTuple):
    """One tile: small, picklable, enough for any worker to read it from the slide file."""

    slide: str            # path (or "<array ...>" for in-memory slides)
    slide_id: str
    x: int                # level-0 top-left
    y: int
    level: int            # pyramid level read from
    read_px: int          # side of the region read at `level`
    size_px0: int         # side of the tile in level-0 px
    tile_px: int          # side of the output image
    mpp: float            # output microns per pixel
    tissue_fraction: float
    shard: int            # index of the Parquet shard of its slide this tile goes to

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
    region_px0: int               # tile side in level-0 px
    stride_px0: int
    n_candidates: int
    specs: list[TileSpec] = field(default_factory=list)
    rejected_tissue: int = 0


def resolve_geometry(slide, cfg: TileConfig) -> tuple[float, int, int, int, int]:
    """(output mpp, level, read_px, region_px0, stride_px0) for this slide, or a ConfigError."""
    name = slide.slide_id
    if slide.mpp is None and (cfg.mpp is not None or cfg.tile_um is not None or cfg.magnification is not None):
        raise ConfigError(f"{name}: slide has no mpp metadata; pass --slide-mpp (microns per level-0 pixel) "
                          "so tiles have a known physical size")
    mpp = cfg.target_mpp(slide.mpp, slide.objective_power, name)
    downsample = mpp / slide.mpp
    if downsample < 1 - MPP_TOLERANCE:
        raise ConfigError(f"{name}: requested {mpp:g} um/px is finer than the slide's level 0 ({slide.mpp:g} um/px); "
                          f"request mpp >= {slide.mpp:g}")
    level = slide.best_level_for_downsample(max(downsample, 1.0))
    region_px0 = max(1, round(cfg.tile_px * downsample))
    read_px = max(1, round(region_px0 / slide.level_downsamples[level]))
    if abs(read_px - cfg.tile_px) <= 1 and abs(downsample / slide.level_downsamples[level] - 1) < 0.01:
        read_px = cfg.tile_px  # level already at the requested resolution: no resampling
    stride_px0 = max(1, round((cfg.tile_px - cfg.overlap_px) * downsample))
    w, h = slide.dimensions
    if region_px0 > w or region_px0 > h:
        raise DataError(f"{name}: a {cfg.tile_px} px tile at {mpp:g} um/px covers {region_px0} level-0 px, "
                        f"larger than the slide ({w}x{h})")
    return mpp, level, read_px, region_px0, stride_px0


def tile_grid(slide, mask: TissueMask, cfg: TileConfig) -> Grid:
    """Every full tile of the grid, kept when its tissue fraction reaches the threshold."""
    mpp, level, read_px, region_px0, stride_px0 = resolve_geometry(slide, cfg)
    w, h = slide.dimensions
    xs = np.arange(0, w - region_px0 + 1, stride_px0)
    ys = np.arange(0, h - region_px0 + 1, stride_px0)
    fractions = _window_fractions(mask, xs, ys, region_px0)
    grid = Grid(slide.slide_id, mpp, level, region_px0, stride_px0, n_candidates=len(xs) * len(ys))
    keep = fractions >= cfg.tissue_threshold
    if cfg.tissue_threshold == 0:
        keep[:] = True
    grid.rejected_tissue = int((~keep).sum())
    iy, ix = np.nonzero(keep)  # row-major: tiles come out top to bottom, left to right
    for n, (r, c) in enumerate(zip(iy, ix)):
        grid.specs.append(TileSpec(slide.path, slide.slide_id, int(xs[c]), int(ys[r]), level, read_px, region_px0, cfg.tile_px,
                                   mpp, round(float(fractions[r, c]), 4), n // cfg.tiles_per_shard))
    return grid


def _window_fractions(mask: TissueMask, xs: np.ndarray, ys: np.ndarray, size_px0: int) -> np.ndarray:
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
    s = (integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0])
    area = np.outer(y1 - y0, x1 - x0)
    return s / area
