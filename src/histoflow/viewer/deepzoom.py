"""Deep-zoom tiles over histoflow's SlideReader protocol, whatever the backend.

Geometry is the Deep Zoom (DZI) pyramid that OpenSeadragon asks for, identical to
openslide-python's `DeepZoomGenerator` (tests compare them): level `L = ceil(log2(max(w, h)))`
is the slide at full resolution, each level below halves it (rounding up) down to 1 x 1, and a
level is cut into `tile_px` squares that carry `overlap_px` extra pixels on every inner edge.

DeepZoomGenerator itself needs an OpenSlide object; this module works on any histoflow reader
(OpenSlide formats, tifffile pyramids, plain images, arrays), so the viewer serves all of them
through one function. Each tile is read from the coarsest slide level still at least as fine as
the tile's scale and shrunk with area averaging. Where the slide has no level within 4x of a
tile's scale (a single-level TIFF or PNG at low zoom), the tile is cut from a bounded overview
of the slide (`overview_px` on its long side, read once in blocks by `read_downsampled`)
instead: each low-zoom tile would otherwise decode a large part of the slide.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from histoflow.slide.base import BaseSlide

TILE_PX = 254  # 254 + 2 x 1 overlap = 256: what OpenSeadragon and DeepZoomGenerator expect
OVERLAP_PX = 1
OVERVIEW_PX = 2048
MAX_READ_SHRINK = 4.0  # slide-level pixels read per tile pixel (per side) before the overview serves


class TileOutOfRange(LookupError):
    """A level, column or row outside the slide's deep-zoom pyramid (the server answers 404)."""


@dataclass(frozen=True)
class DeepZoomGeometry:
    width: int  # level-0 pixels
    height: int
    tile_px: int = TILE_PX
    overlap_px: int = OVERLAP_PX

    @property
    def level_count(self) -> int:
        # halving (rounding up) until 1 x 1: ceil(log2(max side)) + 1 levels
        return (max(self.width, self.height, 1) - 1).bit_length() + 1

    def scale(self, level: int) -> int:
        """Level-0 pixels per pixel of deep-zoom `level`."""
        return 2 ** (self.level_count - 1 - level)

    def level_size(self, level: int) -> tuple[int, int]:
        s = self.scale(level)
        return max(1, math.ceil(self.width / s)), max(1, math.ceil(self.height / s))

    def level_tiles(self, level: int) -> tuple[int, int]:
        w, h = self.level_size(level)
        return math.ceil(w / self.tile_px), math.ceil(h / self.tile_px)

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of a tile in the pixels of its deep-zoom level, overlap included."""
        if not 0 <= level < self.level_count:
            raise TileOutOfRange(f"level {level} is outside 0..{self.level_count - 1}")
        cols, rows = self.level_tiles(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileOutOfRange(f"tile {col}_{row} is outside level {level}'s {cols} x {rows} tiles")
        w, h = self.level_size(level)
        ov = self.overlap_px
        x0 = col * self.tile_px - (ov if col else 0)
        y0 = row * self.tile_px - (ov if row else 0)
        x1 = min(w, (col + 1) * self.tile_px + (ov if col < cols - 1 else 0))
        y1 = min(h, (row + 1) * self.tile_px + (ov if row < rows - 1 else 0))
        return x0, y0, x1 - x0, y1 - y0

    def to_dzi(self, url: str, tile_format: str = "jpeg") -> dict:
        """The DZI descriptor as OpenSeadragon takes it inline (`tileSources: {Image: ...}`)."""
        return {
            "Image": {
                "xmlns": "http://schemas.microsoft.com/deepzoom/2008",
                "Url": url,
                "Format": tile_format,
                "Overlap": str(self.overlap_px),
                "TileSize": str(self.tile_px),
                "Size": {"Width": str(self.width), "Height": str(self.height)},
            }
        }


class DeepZoom:
    """The deep-zoom tile function of one slide reader: `tile(level, col, row)` -> RGB array.

    Thread-safe as far as the reader is (every histoflow backend is): the server calls it from
    several threads at once.
    """

    def __init__(
        self, reader: BaseSlide, tile_px: int = TILE_PX, overlap_px: int = OVERLAP_PX, overview_px: int = OVERVIEW_PX
    ):
        self.reader = reader
        w, h = reader.dimensions
        self.geometry = DeepZoomGeometry(w, h, tile_px, overlap_px)
        self.overview_downsample = max(1.0, max(w, h) / overview_px)
        self._overview: np.ndarray | None = None
        self._overview_lock = threading.Lock()

    def overview(self) -> np.ndarray:
        """The whole slide at `overview_downsample`, read once (blocks of the best level)."""
        if self._overview is None:
            with self._overview_lock:
                if self._overview is None:
                    self._overview = self.reader.read_downsampled(self.overview_downsample)
                    # a small slide's whole level, kept by read_downsampled for tiling's reuse:
                    # the viewer reads regions instead, so it would only hold memory
                    self.reader.kept_level = None
        return self._overview

    def tile(self, level: int, col: int, row: int) -> np.ndarray:
        import cv2

        geom = self.geometry
        x, y, w, h = geom.tile_box(level, col, row)
        s = geom.scale(level)
        # the tile's level-0 box, clipped to the slide (the last row/column is narrower)
        x0, y0 = x * s, y * s
        w0, h0 = min(w * s, geom.width - x0), min(h * s, geom.height - y0)
        reader = self.reader
        best = reader.best_level_for_downsample(s)
        ds = reader.level_downsamples[best]
        # the overview only where the slide has no level within 4x of the tile's scale (a
        # pyramid always has): reading 16x the tile's pixels would cost more than the overview
        if s >= self.overview_downsample and s > MAX_READ_SHRINK * ds:
            ov, d = self.overview(), self.overview_downsample
            left, top = int(x0 / d), int(y0 / d)
            right = min(ov.shape[1], max(left + 1, math.ceil((x0 + w0) / d)))
            bottom = min(ov.shape[0], max(top + 1, math.ceil((y0 + h0) / d)))
            region = ov[top:bottom, left:right]
        else:
            size = (max(1, math.ceil(w0 / ds)), max(1, math.ceil(h0 / ds)))
            region = reader.read_region((x0, y0), best, size)
        if region.shape[1] != w or region.shape[0] != h:
            region = cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(region)

    def tile_bytes(self, level: int, col: int, row: int, quality: int = 85) -> bytes:
        """A tile as JPEG: the server's answer, and what bench/bench_view.py calls in a loop."""
        return encode_jpeg(self.tile(level, col, row), quality)


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    import simplejpeg  # libjpeg-turbo; releases the GIL while it encodes

    return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=quality, colorspace="RGB")
