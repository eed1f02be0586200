"""Reading tile pixels: one tile, or neighbouring tiles cut from one region read (blocks).

Pure functions of (slide reader, TileSpec): they run unchanged on a thread, in a pool worker
or on a Spark executor. Each tile is read at its spec's pyramid level and resized to tile_px.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from histoflow.tiling.grid import TileSpec

MAX_BLOCK_PX = 4096  # widest / tallest region read at once for neighbouring tiles (level px)
MAX_BLOCK_AREA = 4096 * 2048  # 32 MB of RGBA at most per block read


def resize_tile(img: np.ndarray, spec: TileSpec) -> np.ndarray:
    import cv2

    if spec.read_px != spec.tile_px:
        interp = cv2.INTER_AREA if spec.read_px > spec.tile_px else cv2.INTER_CUBIC
        img = cv2.resize(img, (spec.tile_px, spec.tile_px), interpolation=interp)
    return img


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
    """The tile's pixels at its output size (area-resized from the level it is read at)."""
    return resize_tile(read_region(slide, (spec.x, spec.y), spec.level, (spec.read_px, spec.read_px)), spec)


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
                right, bottom = max(b.right, off[0] + spec.read_px), max(b.bottom, off[1] + spec.read_px)
                tiles_area = (len(b.specs) + 1) * spec.read_px**2
                if (
                    right <= MAX_BLOCK_PX
                    and bottom <= MAX_BLOCK_PX
                    and right * bottom <= min(tiles_area, MAX_BLOCK_AREA)
                ):
                    b.specs.append(spec)
                    b.right, b.bottom = right, bottom
                    continue
        blocks.append(Block([spec], spec.x, spec.y, slide.level_downsamples[spec.level], spec.read_px, spec.read_px))
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
        for spec in b.specs:
            try:
                if region is not None:
                    # group_blocks admits a spec to a block only when its offset is whole
                    ox, oy = cast(tuple[int, int], b.offset(spec))
                    tile = region[oy : oy + spec.read_px, ox : ox + spec.read_px]
                    out.append(resize_tile(np.ascontiguousarray(tile), spec))
                else:
                    out.append(read_tile(slide, spec))
            except Exception as exc:  # noqa: BLE001 - reported per tile by tile_result
                out.append(exc)
    return out
