"""tifffile backend: generic, OME and pyramidal TIFF that OpenSlide refuses (strips, SubIFDs...).

Regions are read by decoding only the tiles (or strips) that overlap them, straight from the
file (no zarr layer: measured here ~2x faster for 256 px tiles), so a TIFF far larger than
memory is read in bounded memory. Levels are tifffile's pyramid levels of the first series
(SubIFDs or reduced pages in the main IFD chain).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from histoflow.core.errors import SlideReadError
from histoflow.slide.base import BaseSlide

log = logging.getLogger(__name__)
WHOLE_PAGE_LIMIT_BYTES = 1 << 30
CACHE_BYTES = (
    64 * 1024 * 1024
)  # decoded tiles kept per reader: bounded, like OpenSlide's cache  # pages that are neither tiled nor striped contiguously are read whole


def _mpp_of(page) -> float | None:
    """Microns per pixel from the TIFF resolution tags (None when absent or unitless)."""
    tags = page.tags
    xres, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
    if xres is None or unit is None:
        return None
    num, den = xres.value
    if not num or not den:
        return None
    px_per_unit = num / den
    um_per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit.value))  # inch, centimetre; 1 = no unit
    if um_per_unit is None or px_per_unit <= 1:  # 72 dpi-style defaults mean "unknown", not 353 um
        return None
    mpp = um_per_unit / px_per_unit
    return mpp if mpp < 100 else None


class TiffSlide(BaseSlide):
    backend = "tifffile"
    cache_bytes = CACHE_BYTES

    def __init__(self, path: str | Path, mpp_override: float | None = None):
        import tifffile

        try:
            self._tif = tifffile.TiffFile(str(path))
            series = self._tif.series[0]
            levels = [lv for lv in series.levels if len(lv.keyframe.shape) >= 2]
            self._pages = [lv.keyframe for lv in levels]
        except Exception as exc:  # TiffFileError, struct.error, IndexError on truncated files...
            raise SlideReadError(f"{path}: tifffile cannot read this TIFF ({exc})") from exc
        page0 = self._pages[0]
        for page in self._pages:
            if (
                page.dtype != np.uint8
                or page.samplesperpixel not in (1, 3, 4)
                or page.planarconfig != 1
                and page.samplesperpixel > 1
            ):
                raise SlideReadError(
                    f"{path}: unsupported TIFF layout (dtype {page.dtype}, {page.samplesperpixel} samples, "
                    f"planar config {page.planarconfig}); expected 8-bit RGB, RGBA or gray"
                )
        dims = [(p.imagewidth, p.imagelength) for p in self._pages]
        downsamples = [dims[0][0] / w for (w, _h) in dims]
        props = {
            str(t.name): str(t.value)[:200]
            for t in page0.tags.values()
            if t.name in ("ImageDescription", "Software", "Make", "Model", "DateTime", "Artist")
        }
        self._lock = threading.Lock()  # the file handle's seek+read pair must not interleave
        self._cache: OrderedDict = OrderedDict()
        self._cache_bytes = 0
        super().__init__(
            path,
            dims,
            downsamples,
            _mpp_of(page0),
            vendor=f"tiff ({series.kind})",
            properties=props,
            mpp_override=mpp_override,
        )

    def jpeg_tile_size(self, level: int) -> tuple[int, int] | None:
        """(width, height) of the JPEG tiles `level` is stored as (decoded by libjpeg-turbo, as
        OpenSlide decodes them); None when the level is not JPEG-tiled."""
        page = self._pages[level]
        return (page.tilewidth, page.tilelength) if page.is_tiled and int(page.compression) == 7 else None

    # -- region reads ------------------------------------------------------------------------
    def read_region(self, xy_level0, level, size_px) -> np.ndarray:
        x0, y0, w, h = self._check_region(xy_level0, level, size_px)
        ds = self.level_downsamples[level]
        x, y = int(round(x0 / ds)), int(round(y0 / ds))
        page = self._pages[level]
        lw, lh = self.level_dimensions[level]
        out = np.full((h, w, 3), 255, np.uint8)  # outside the image = white glass, as OpenSlide
        # intersection with the image
        ix0, iy0, ix1, iy1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if ix1 <= ix0 or iy1 <= iy0:
            return out
        try:
            if page.is_tiled:
                seg_h, seg_w = page.tilelength, page.tilewidth
            elif page.rowsperstrip and len(page.dataoffsets) > 1:
                seg_h, seg_w = min(page.rowsperstrip, lh), lw
            else:
                seg_h = seg_w = None
            if seg_h is None:
                self._paste(out, self._whole_page(page), 0, 0, x, y, ix0, iy0, ix1, iy1)
                return out
            across = -(-lw // seg_w)
            for ty in range(iy0 // seg_h, (iy1 - 1) // seg_h + 1):
                for tx in range(ix0 // seg_w, (ix1 - 1) // seg_w + 1):
                    seg = self._segment(page, ty * across + tx)
                    self._paste(out, seg, tx * seg_w, ty * seg_h, x, y, ix0, iy0, ix1, iy1)
        except SlideReadError:
            raise
        except Exception as exc:  # truncated data, corrupt JPEG...: name the slide and the region
            raise SlideReadError(
                f"{self.path}: cannot read region x={x0} y={y0} level={level} size={w}x{h} ({exc})"
            ) from exc
        return out

    def _segment(self, page, index: int) -> np.ndarray:
        """A decoded tile/strip, through a small LRU cache: neighbouring tiles of a grid share
        file tiles (a 512 px JPEG tile holds four 256 px tiles), as OpenSlide's cache knows."""
        key = (id(page), index)
        with self._lock:
            seg = self._cache.get(key)
            if seg is not None:
                self._cache.move_to_end(key)
                return seg
        seg = self._decode_segment(page, index)
        with self._lock:
            self._cache[key] = seg
            self._cache_bytes += seg.nbytes
            while self._cache_bytes > self.cache_bytes and len(self._cache) > 1:
                self._cache_bytes -= self._cache.popitem(last=False)[1].nbytes
        return seg

    def _decode_segment(self, page, index: int) -> np.ndarray:
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        if not count:  # sparse TIFF: missing tile = background
            return np.full((page.tilelength or page.rowsperstrip, page.tilewidth or page.imagewidth, 3), 255, np.uint8)
        fh = self._tif.filehandle
        with self._lock:
            fh.seek(offset)
            data = fh.read(count)
        if len(data) != count:
            raise SlideReadError(
                f"{self.path}: file is truncated (segment {index} needs {count} bytes at {offset}, got {len(data)})"
            )
        seg, _index, shape = page.decode(data, index, jpegtables=page.jpegtables)
        if seg is None:
            raise SlideReadError(f"{self.path}: segment {index} could not be decoded")
        return self._rgb(seg.reshape(shape[1:]))

    def _whole_page(self, page) -> np.ndarray:
        if page.nbytes > WHOLE_PAGE_LIMIT_BYTES:
            raise SlideReadError(
                f"{self.path}: untiled TIFF page of {page.nbytes / 1e9:.1f} GB is too large to read "
                "whole; convert it to a tiled pyramidal TIFF"
            )
        return self._rgb(page.asarray())

    @staticmethod
    def _rgb(arr: np.ndarray) -> np.ndarray:
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        elif arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        elif arr.shape[-1] == 4:
            arr = arr[..., :3]
        return arr

    @staticmethod
    def _paste(out, seg, sx, sy, x, y, ix0, iy0, ix1, iy1) -> None:
        """Copy the part of segment `seg` (top-left sx, sy in level px) that falls in the region."""
        sh, sw = seg.shape[:2]
        a0, b0 = max(sx, ix0), max(sy, iy0)
        a1, b1 = min(sx + sw, ix1), min(sy + sh, iy1)
        if a1 > a0 and b1 > b0:
            out[b0 - y : b1 - y, a0 - x : a1 - x] = seg[b0 - sy : b1 - sy, a0 - sx : a1 - sx]

    def close(self) -> None:
        self.kept_level = None
        self._tif.close()
