"""OpenSlide backend: svs, ndpi, mrxs, scn, vms, bif, DICOM (dicom.py), generic tiled TIFF...

openslide-python is imported here, not at package import, so histoflow imports without it.
Each reader gets its own bounded tile cache: N workers x cache size is the memory a tiling
job can spend on OpenSlide caches, whatever the slide size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from histoflow.core.errors import SlideReadError
from histoflow.slide.base import BaseSlide

log = logging.getLogger(__name__)

CACHE_BYTES = 32 * 1024 * 1024  # per reader; OpenSlide's default is 1 GiB shared by the process


def _openslide():
    try:
        import openslide
    except ImportError as exc:  # pragma: no cover - a core dependency, missing only in odd installs
        raise ImportError("OpenSlide is needed to read this slide: pip install openslide-python openslide-bin") from exc
    return openslide


def openslide_format(path: Path) -> str | None:
    """OpenSlide's vendor name for the file ("aperio", "generic-tiff"...), None if it cannot read it."""
    try:
        return _openslide().OpenSlide.detect_format(str(path))
    except Exception:  # detect_format raises on some unreadable files: that is a "no"
        return None


def openslide_can_read(path: Path) -> bool:
    return openslide_format(path) is not None


def _float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """OpenSlide returns RGBA with alpha 0 outside the scanned area: composite onto white glass."""
    import cv2

    alpha = cv2.extractChannel(rgba, 3)
    if cv2.minMaxLoc(alpha)[0] == 255:  # the common case, kept cheap: OpenCV, no strided numpy
        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
    rgb = rgba[..., :3]
    a = alpha[..., None].astype(np.uint16)
    # OpenSlide's RGBA is not premultiplied (openslide-python un-premultiplies it)
    return ((rgb.astype(np.uint16) * a + 255 * (255 - a)) // 255).astype(np.uint8)


class OpenSlideSlide(BaseSlide):
    backend = "openslide"
    # Another reader of this file that gives the same level-0 pixels faster (open_slide sets a
    # tifffile reader for Aperio JPEG slides: OpenSlide's region reads cost ~3x its decode).
    level0: BaseSlide | None = None

    @property
    def decoder(self) -> str:
        """Who decodes level 0: "openslide", or the backend of `level0`."""
        return self.level0.backend if self.level0 is not None else self.backend

    def __init__(self, path: str | Path, mpp_override: float | None = None, cache_bytes: int = CACHE_BYTES):
        openslide = _openslide()
        try:
            self._slide = openslide.OpenSlide(self._openslide_path(Path(path)))
        except openslide.OpenSlideError as exc:
            raise SlideReadError(f"{path}: OpenSlide cannot open this slide ({exc})") from exc
        try:
            self._slide.set_cache(openslide.OpenSlideCache(cache_bytes))
        except AttributeError:  # pragma: no cover - openslide-python < 1.3 has no per-slide cache
            pass
        props = dict(self._slide.properties)
        mpp_x, mpp_y = _float(props.get("openslide.mpp-x")), _float(props.get("openslide.mpp-y"))
        mpp = (mpp_x + mpp_y) / 2 if mpp_x and mpp_y else (mpp_x or mpp_y)
        super().__init__(
            path,
            self._slide.level_dimensions,
            self._slide.level_downsamples,
            mpp,
            objective_power=_float(props.get("openslide.objective-power")),
            vendor=props.get("openslide.vendor"),
            properties=props,
            associated_images=sorted(self._slide.associated_images),
            mpp_override=mpp_override,
        )

    def _openslide_path(self, path: Path) -> str:
        """The file OpenSlide opens for `path` (DicomSlide: one instance of a folder's series)."""
        return str(path)

    def read_region(self, xy_level0, level, size_px) -> np.ndarray:
        x, y, w, h = self._check_region(xy_level0, level, size_px)
        if level == 0 and self.level0 is not None:
            return self.level0.read_region((x, y), 0, (w, h))
        return self.openslide_region(x, y, level, w, h)

    def openslide_region(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """A region decoded by OpenSlide itself, whoever decodes level 0 for read_region."""
        try:
            img = self._slide.read_region((x, y), level, (w, h))
        except Exception as exc:  # OpenSlideError (corrupt tile data), or a closed handle
            raise SlideReadError(
                f"{self.path}: cannot read region x={x} y={y} level={level} size={w}x{h} ({exc})"
            ) from exc
        return rgba_to_rgb(np.asarray(img))

    def __reduce__(self):
        # reopened in the receiving process with the same decoder (tifffile for level 0 only
        # after the same pixel probe), not silently falling back to OpenSlide's slower reads
        override = self.mpp if self.mpp_source == "override" else None
        return (reopen_openslide, (type(self), self.path, override, self.level0 is not None))

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self.associated_images:
            raise SlideReadError(f"{self.path}: no associated image {name!r} (has {self.associated_images})")
        return np.asarray(self._slide.associated_images[name].convert("RGB"))

    def close(self) -> None:
        self.kept_level = None
        if self.level0 is not None:
            self.level0.close()
        self._slide.close()


def reopen_openslide(cls: type, path: str, mpp_override: float | None, tifffile_level0: bool) -> OpenSlideSlide:
    """Unpickling an OpenSlide reader: reopen it, and its tifffile level 0 when it had one."""
    slide = cls(Path(path), mpp_override=mpp_override)
    if tifffile_level0:
        slide.level0 = same_level0_pixels(slide)
    return slide


def same_level0_pixels(slide) -> BaseSlide | None:
    """A tifffile reader of an OpenSlide slide's level 0 when it decodes exactly OpenSlide's
    pixels, else None. Aperio slides store level 0 as JPEG tiles in a TIFF; OpenSlide's region
    reads cost ~3x decoding those tiles directly (CMU-1-Small-Region, whole level: ~30 ns a pixel
    even with OpenSlide's cache warm, ~11 by tifffile), and 20x slides are read at level 0 for
    PCam's 0.972 um/px. Both decode with libjpeg-turbo; a probe where four file tiles meet is
    compared pixel for pixel on every open, so a file the two decode differently keeps OpenSlide."""
    from histoflow.slide.tiff import TiffSlide

    try:
        tiff = TiffSlide(slide.path, mpp_override=slide.mpp or 1.0)  # metadata stays OpenSlide's
    except SlideReadError:
        return None
    try:
        tile = tiff.jpeg_tile_size(0)
        if tile is None or tiff.level_dimensions[0] != slide.level_dimensions[0]:
            raise SlideReadError("not the same JPEG-tiled level 0")
        w, h = slide.level_dimensions[0]
        x = max(0, min(w - 64, (w // tile[0] // 2) * tile[0] - 32))
        y = max(0, min(h - 64, (h // tile[1] // 2) * tile[1] - 32))
        size = (min(64, w), min(64, h))
        if not np.array_equal(tiff.read_region((x, y), 0, size), slide.openslide_region(x, y, 0, *size)):
            raise SlideReadError("tifffile and OpenSlide decode level 0 differently")
    except SlideReadError as exc:
        log.debug("%s: level 0 stays OpenSlide's (%s)", slide.path, exc)
        tiff.close()
        return None
    return tiff
