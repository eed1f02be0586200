"""The SlideReader protocol and BaseSlide, the shared behaviour of every backend.

Backend choice (`open_slide`) lives in histoflow.slide.open, which imports the readers; the
readers import this module only, so the protocol sits below its implementations.

Every backend speaks level-0 coordinates (TIAToolbox/OpenSlide vocabulary): a region is
addressed by its top-left `(x, y)` at level 0, read at `level`, `size_px = (w, h)` pixels of
that level, and comes back as an HxWx3 uint8 RGB array (transparent/out-of-slide = white glass).

Readers are cheap handles. They are never pickled into workers: a tile spec carries the slide
path and each worker opens its own reader lazily (see histoflow.tiling.readers).
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from histoflow.core.errors import ConfigError, SlideReadError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "openslide", "tifffile", "image", "array")
# a DICOM instance named by its UID alone (no .dcm), as series are often exported
DICOM_UID = re.compile(r"\d+(\.\d+){3,}")


@runtime_checkable
class SlideReader(Protocol):
    """What histoflow needs from a whole-slide image, whatever the file format."""

    path: str
    slide_id: str
    backend: str
    level_dimensions: list[tuple[int, int]]  # (width, height) per level, level 0 first
    level_downsamples: list[float]  # level-0 pixels per level pixel
    mpp: float | None  # microns per level-0 pixel (None: unknown)
    objective_power: float | None
    vendor: str | None
    properties: dict[str, str]
    associated_images: list[str]

    def read_region(self, xy_level0: tuple[int, int], level: int, size_px: tuple[int, int]) -> np.ndarray: ...

    def thumbnail(self, max_px: int = 1024) -> np.ndarray: ...

    def close(self) -> None: ...


def slide_id_of(path: str | Path) -> str:
    """The file name without its (possibly double, `.ome.tif`) suffix: ids must stay readable.

    A DICOM slide is a folder of instances named by UID: its id is the folder's name, whether
    the folder or one of its `.dcm` instances is given (the same slide either way)."""
    p = Path(path)
    if p.suffix.lower() == ".dcm" or DICOM_UID.fullmatch(p.name):  # an instance: its series folder
        p = p.parent
    if p.name in ("", ".", "..") or p.is_dir():
        return (p.name if p.name not in ("", ".", "..") else p.resolve().name) or str(p)
    name = p.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


class BaseSlide:
    """Shared behaviour of the backends: levels, mpp override, thumbnails, bounds checks."""

    backend = "base"

    if TYPE_CHECKING:
        # every backend defines it (SlideReader's signature); declared for the shared readers below
        def read_region(self, xy_level0: tuple[int, int], level: int, size_px: tuple[int, int]) -> np.ndarray: ...

    def __init__(
        self,
        path: str | Path,
        level_dimensions,
        level_downsamples,
        mpp: float | None,
        objective_power: float | None = None,
        vendor: str | None = None,
        properties: dict | None = None,
        associated_images: list[str] | None = None,
        mpp_override: float | None = None,
        slide_id: str | None = None,
    ):
        self.path = str(path)
        self.slide_id = slide_id or slide_id_of(path)
        self.level_dimensions = [(int(w), int(h)) for w, h in level_dimensions]
        self.level_downsamples = [float(d) for d in level_downsamples]
        self.objective_power = objective_power
        self.vendor = vendor
        self.properties = dict(properties or {})
        self.associated_images = list(associated_images or [])
        self.mpp_source = "metadata" if mpp else None
        if mpp_override is not None:
            if not mpp_override > 0:
                raise ConfigError(f"{self.path}: slide mpp override must be > 0, got {mpp_override}")
            if mpp and abs(mpp - mpp_override) / mpp > 0.01:
                log.warning("%s: metadata says %.4g mpp; using the override %.4g", self.slide_id, mpp, mpp_override)
            mpp, self.mpp_source = float(mpp_override), "override"
        elif not mpp:
            # Never guess: a wrong mpp silently changes the physical size of every tile.
            log.warning(
                "%s: no microns-per-pixel metadata; pass --mpp/--slide-mpp to tile it at a physical resolution",
                self.slide_id,
            )
            mpp = None
        self.mpp = mpp

    # -- geometry ---------------------------------------------------------------------------
    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    def level_mpp(self, level: int) -> float | None:
        return None if self.mpp is None else self.mpp * self.level_downsamples[level]

    def best_level_for_downsample(self, downsample: float) -> int:
        """The lowest-resolution level that is still at least as fine as `downsample`."""
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + 1e-6):
                best = level
        return best

    def _check_region(self, xy_level0, level: int, size_px) -> tuple[int, int, int, int]:
        if not 0 <= level < self.level_count:
            raise SlideReadError(f"{self.path}: level {level} does not exist (slide has {self.level_count})")
        x, y = (int(v) for v in xy_level0)
        w, h = (int(v) for v in size_px)
        if w <= 0 or h <= 0:
            raise SlideReadError(f"{self.path}: region size must be positive, got {w}x{h}")
        return x, y, w, h

    # -- whole-slide views -------------------------------------------------------------------
    def read_downsampled(self, downsample: float, block_px: int = 4096) -> np.ndarray:
        """The whole slide at `downsample` (level-0 px per output px), in bounded memory.

        Reads the best pyramid level in blocks of at most block_px x block_px and shrinks each,
        so even a single-level slide far larger than memory gives a thumbnail (slowly, but
        correctly) while holding one block at a time. A level small enough to be read as one
        block is kept as `kept_level` (at most block_px^2 px, 50 MB): tiling a small slide then
        cuts its tiles from the pixels its tissue mask was computed from instead of decoding
        them a second time.
        """
        import cv2

        level = self.best_level_for_downsample(downsample)
        lw, lh = self.level_dimensions[level]
        lds = self.level_downsamples[level]
        scale = lds / downsample  # output px per level px (<= 1)
        out_w, out_h = max(1, round(self.dimensions[0] / downsample)), max(1, round(self.dimensions[1] / downsample))
        if lw <= block_px and lh <= block_px and self.keeps_small_levels:
            whole = self._read_level_in_strips(level)
            self.kept_level = (level, whole)
            return cv2.resize(whole, (out_w, out_h), interpolation=cv2.INTER_AREA)
        out = np.empty((out_h, out_w, 3), np.uint8)
        block_px = max(block_px, math.ceil(1 / scale))
        for top in range(0, lh, block_px):
            rows = min(block_px, lh - top)
            o_top, o_bot = round(top * scale), min(out_h, round((top + rows) * scale))
            if o_bot <= o_top:
                continue
            for left in range(0, lw, block_px):
                cols = min(block_px, lw - left)
                o_left, o_right = round(left * scale), min(out_w, round((left + cols) * scale))
                if o_right <= o_left:
                    continue
                block = self.read_region((round(left * lds), round(top * lds)), level, (cols, rows))
                out[o_top:o_bot, o_left:o_right] = cv2.resize(
                    block, (o_right - o_left, o_bot - o_top), interpolation=cv2.INTER_AREA
                )
        return out

    def _read_level_in_strips(self, level: int, strip_min_px: int = 1 << 20) -> np.ndarray:
        """A whole (small) level, read as horizontal strips on a few threads: the backends
        release the GIL while they decode, so a 20x slide region's mask read takes half the time."""
        from concurrent.futures import ThreadPoolExecutor

        lw, lh = self.level_dimensions[level]
        lds = self.level_downsamples[level]
        n = max(1, min(os.cpu_count() or 1, 4, (lw * lh) // strip_min_px))
        rows = -(-lh // n)
        whole = np.empty((lh, lw, 3), np.uint8)

        def strip(top: int) -> None:
            h = min(rows, lh - top)
            whole[top : top + h] = self.read_region((0, round(top * lds)), level, (lw, h))

        if n == 1:
            strip(0)
        else:
            with ThreadPoolExecutor(n) as threads:
                list(threads.map(strip, range(0, lh, rows)))
        return whole

    def thumbnail(self, max_px: int = 1024) -> np.ndarray:
        w, h = self.dimensions
        return self.read_downsampled(max(1.0, max(w, h) / max_px))

    def info(self) -> dict[str, Any]:
        """Everything `histoflow info` prints, as plain JSON-able values."""
        mag = self.objective_power
        return {
            "path": self.path,
            "slide_id": self.slide_id,
            "backend": self.backend,
            "vendor": self.vendor,
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "objective_power": mag,
            "levels": [
                {
                    "level": i,
                    "width": w,
                    "height": h,
                    "downsample": round(ds, 4),
                    "mpp": None if self.mpp is None else round(self.mpp * ds, 5),
                    "magnification": None if not mag else round(mag / ds, 3),
                }
                for i, ((w, h), ds) in enumerate(zip(self.level_dimensions, self.level_downsamples))
            ],
            "associated_images": self.associated_images,
        }

    kept_level: tuple[int, np.ndarray] | None = None
    keeps_small_levels = True  # in-memory backends hold their pixels already

    def close(self) -> None:  # backends with OS handles override this
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):
        # Readers hold OS handles and caches: ship the recipe to reopen, never the handle.
        return (reopen, (type(self), self.path, self.mpp if self.mpp_source == "override" else None))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.slide_id} {self.dimensions[0]}x{self.dimensions[1]} levels={self.level_count} mpp={self.mpp}>"


def reopen(cls: type, path: str, mpp_override: float | None) -> BaseSlide:
    """Unpickling a reader: the same backend class reopens the file in the receiving process
    (the backend class, not open_slide, so this module needs no reader import)."""
    return cls(Path(path), mpp_override=mpp_override)
