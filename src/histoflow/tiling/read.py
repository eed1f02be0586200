"""Reading tile pixels: one tile, or neighbouring tiles cut from one region read (blocks).

Pure functions of (slide reader, TileSpec): they run unchanged on a thread, in a pool worker
or on a Spark executor. Each tile is read at its spec's pyramid level and resized to tile_px.

How a region becomes tile_px (`resize_tile`), by the factor r = read_px / tile_px:
  r == 1            no resizing
  r < 1             cubic upsampling (slide prediction's --allow-resample)
  r whole, or r not within 10% of a whole number >= 2
                    OpenCV area interpolation (exact pixel-area averages)
  r within 10% of a whole number f >= 2 (0.972 um/px from a 0.5 um/px slide: r = 1.95, f = 2;
  from a 0.25 um/px slide: r = 3.89, f = 4)
                    an exact f x f box average (a virtual pyramid level f times coarser,
                    as a scanner would store it), then linear interpolation by the small
                    remaining factor r / f. OpenCV's area interpolation at a factor that is
                    not whole runs a scalar loop, about 170-190 us for a 187 px region (13
                    times its whole-factor path); this takes about 38 us. On tissue its pixels
                    are about 4 grey levels from area interpolation's and a little softer
                    (0.84 of its neighbour contrast: the interpolation spans two box cells);
                    bench/bench_resample.py measures both.
The tiler, slide prediction and embedding all read through here, so a model sees the same
resampling in training and in use. The second path reads a slightly larger window than
read_px (`window_px`: whole box cells plus one for the interpolation's last neighbour).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from histoflow.tiling.grid import TileSpec, box_factor

# Which resampling made a tile's pixels. Bump it whenever this module gives different pixels for
# the same settings: tiling folders, predict-slide and embed outputs record it, so a run resumed
# by a newer histoflow redoes its work instead of mixing old and new pixels.
# 1: area interpolation at every factor; 2 (2026-12-01): the box path near whole factors.
PIXELS_VERSION = 2
MAX_BLOCK_PX = 4096  # widest / tallest region read at once for neighbouring tiles (level px)
MAX_BLOCK_AREA = 4096 * 2048  # 32 MB of RGBA at most per block read


def window_px(spec: TileSpec) -> int:
    """Side of the level region read for a tile: read_px, or whole box cells covering it
    plus one cell (the last output pixel interpolates between the last two cells)."""
    f = box_factor(spec.read_px, spec.tile_px)
    return spec.read_px if f == 1 else f * (-(-spec.read_px // f) + 1)


def resize_tile(img: np.ndarray, spec: TileSpec) -> np.ndarray:
    """A tile's window_px region at tile_px (see the module docstring for the three paths)."""
    import cv2

    if spec.read_px == spec.tile_px:
        return np.ascontiguousarray(img)  # a copy when img is a view of a block region
    f = box_factor(spec.read_px, spec.tile_px)
    if f == 1:
        interp = cv2.INTER_AREA if spec.read_px > spec.tile_px else cv2.INTER_CUBIC
        return cv2.resize(img, (spec.tile_px, spec.tile_px), interpolation=interp)
    return finish_boxed(box_reduce(img, f), spec, f)


def box_reduce(img: np.ndarray, f: int) -> np.ndarray:
    """Means of f x f cells from the top-left corner (a partial last row/column is dropped).
    Each cell depends on its own pixels only, so cells cut from a reduced block equal the
    reduced window of a single tile aligned to the same cells."""
    import cv2

    h, w = img.shape[0] // f, img.shape[1] // f
    return cv2.resize(img[: h * f, : w * f], (w, h), interpolation=cv2.INTER_AREA)  # whole factor: exact


def finish_boxed(cells: np.ndarray, spec: TileSpec, f: int) -> np.ndarray:
    """tile_px from a tile's window_px / f box cells: linear interpolation by read_px / f / tile_px."""
    import cv2

    # fx/fy (not a size) set the sampling step to exactly read_px / f / tile_px cells, so output
    # pixel j is centred at (j + 0.5) * read_px / tile_px window px, as in area interpolation.
    # The result has a column and a row more than tile_px, which are cut off.
    scale = spec.tile_px * f / spec.read_px
    out = cv2.resize(cells, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out[: spec.tile_px, : spec.tile_px])


def read_region(slide, xy_level0: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
    """slide.read_region, cut from the whole level when the reader kept it in memory (a small
    slide whose tissue mask read it whole: see BaseSlide.read_downsampled)."""
    kept = getattr(slide, "kept_level", None)
    if kept is not None and kept[0] == level:
        ds = slide.level_downsamples[level]
        x, y = xy_level0[0] / ds, xy_level0[1] / ds
        arr = kept[1]
        if (
            x == int(x)
            and y == int(y)
            and 0 <= x
            and 0 <= y
            and x + size[0] <= arr.shape[1]
            and y + size[1] <= arr.shape[0]
        ):
            return arr[int(y) : int(y) + size[1], int(x) : int(x) + size[0]].copy()
    return slide.read_region(xy_level0, level, size)


def read_tile(slide, spec: TileSpec) -> np.ndarray:
    """The tile's pixels at its output size (resized from the level it is read at)."""
    side = window_px(spec)
    return resize_tile(read_region(slide, (spec.x, spec.y), spec.level, (side, side)), spec)


@dataclass
class Block:
    """Neighbouring tiles read as one region: level px offsets from (x0, y0) in level-0 px."""

    specs: list[TileSpec]
    x0: int
    y0: int
    ds: float
    right: int  # level px, exclusive
    bottom: int

    def offset(self, spec: TileSpec) -> tuple[int, int] | None:
        ox, oy = (spec.x - self.x0) / self.ds, (spec.y - self.y0) / self.ds
        return (int(ox), int(oy)) if ox == int(ox) and oy == int(oy) else None


def group_blocks(slide, specs: Sequence[TileSpec]) -> list[Block]:
    """Group specs (in grid order) into blocks that one region read covers without reading more
    pixels than tile-by-tile reads would: overlapping or touching tiles of one or more rows.
    Only where every offset is a whole number of level px, so a slice of the block is exactly
    the pixels read_region gives for that tile."""
    blocks: list[Block] = []
    for spec in specs:
        b = blocks[-1] if blocks else None
        if b is not None:
            first = b.specs[0]
            off = b.offset(spec)
            if (
                off is not None
                and off[0] >= 0
                and off[1] >= 0
                and spec.level == first.level
                and spec.read_px == first.read_px
                and spec.slide == first.slide
            ):
                side = window_px(spec)
                right, bottom = max(b.right, off[0] + side), max(b.bottom, off[1] + side)
                tiles_area = (len(b.specs) + 1) * side**2
                if (
                    right <= MAX_BLOCK_PX
                    and bottom <= MAX_BLOCK_PX
                    and right * bottom <= min(tiles_area, MAX_BLOCK_AREA)
                ):
                    b.specs.append(spec)
                    b.right, b.bottom = right, bottom
                    continue
        side = window_px(spec)
        blocks.append(Block([spec], spec.x, spec.y, slide.level_downsamples[spec.level], side, side))
    return blocks


def read_tiles(slide, specs: Sequence[TileSpec]) -> list[np.ndarray | Exception]:
    """Pixels of each spec (or the exception reading it raised), in order.

    Neighbouring tiles are cut from one region read: with overlap (stride < tile) a tile-by-tile
    loop reads and decodes every pixel several times (16 times at stride 64 for 256 px tiles);
    this reads it once. A block that fails to read falls back to single tiles, so only the bad
    tiles fail."""
    out: list[np.ndarray | Exception] = []
    for b in group_blocks(slide, specs):
        region = None
        if len(b.specs) > 1:
            try:
                region = read_region(slide, (b.x0, b.y0), b.specs[0].level, (b.right, b.bottom))
            except Exception:  # noqa: BLE001 - retried tile by tile below, which names the bad tile
                region = None
        cut = BlockCutter(region, b) if region is not None else None
        for spec in b.specs:
            try:
                out.append(cut.tile(spec) if cut is not None else read_tile(slide, spec))
            except Exception as exc:  # noqa: BLE001 - reported per tile by tile_result
                out.append(exc)
    return out


class BlockCutter:
    """Tiles cut from a block's region. On the box path the block is box-reduced once per cell
    alignment its tiles use (overlapping tiles would otherwise reduce each pixel several times),
    unless that would reduce more pixels than the tiles' own windows hold."""

    def __init__(self, region: np.ndarray, block: Block):
        self.region, self.block = region, block
        first = block.specs[0]  # a block's tiles share level, read_px and tile_px
        self.f = box_factor(first.read_px, first.tile_px)
        self.side = window_px(first)
        self.reduced: dict[tuple[int, int], np.ndarray] = {}
        if self.f > 1:
            phases = {(ox % self.f, oy % self.f) for ox, oy in map(self._offset, block.specs)}
            self.share = len(phases) * region.shape[0] * region.shape[1] <= len(block.specs) * self.side**2
        else:
            self.share = False

    def _offset(self, spec: TileSpec) -> tuple[int, int]:
        # group_blocks admits a spec to a block only when its offset is whole
        return cast(tuple[int, int], self.block.offset(spec))

    def tile(self, spec: TileSpec) -> np.ndarray:
        ox, oy = self._offset(spec)
        if not self.share:
            return resize_tile(self.region[oy : oy + self.side, ox : ox + self.side], spec)
        f, phase = self.f, (ox % self.f, oy % self.f)
        if phase not in self.reduced:
            self.reduced[phase] = box_reduce(self.region[phase[1] :, phase[0] :], f)
        n, cx, cy = self.side // f, ox // f, oy // f
        return finish_boxed(self.reduced[phase][cy : cy + n, cx : cx + n], spec, f)
