"""`open_slide`: pick the reader backend for a file (OpenSlide, tifffile, PIL) or an array.

Kept apart from base.py, which holds the protocol every reader implements: this module
imports the readers, they import base, and nothing imports back.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from histoflow.core.errors import ConfigError, SlideReadError
from histoflow.slide.base import BACKENDS, BaseSlide
from histoflow.slide.dicom import DicomSlide, is_dicom_file
from histoflow.slide.files import check_companions

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".ome.tif", ".ome.tiff")


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


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


def open_slide(path: str | Path, backend: str = "auto", mpp: float | None = None) -> BaseSlide:
    """Open a slide with the named backend, or the first that can read it (`auto`).

    auto: OpenSlide for every vendor format it recognises (svs, ndpi, mrxs, scn, DICOM...), with level 0
    of Aperio JPEG slides decoded by tifffile when it gives the same pixels (same_level0_pixels);
    tifffile for generic tiled TIFF (faster, same pixels) and for TIFFs OpenSlide refuses (strips,
    OME, SubIFD pyramids); PIL for PNG/JPEG. A folder is a DICOM series (see slide.dicom).
    Formats whose pixels live in a folder beside the file (VSI, MRXS) are refused with a message
    naming that folder when it is missing.
    `mpp` overrides (or supplies missing) microns-per-pixel metadata.
    """
    if isinstance(path, np.ndarray):
        from histoflow.slide.array import ArraySlide

        return ArraySlide(path, mpp=mpp)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown slide backend {backend!r}; expected one of {BACKENDS}")
    p = Path(path)
    if not p.exists():
        raise SlideReadError(f"{p}: slide file not found")
    if p.is_file() and p.stat().st_size == 0:
        raise SlideReadError(f"{p}: slide file is empty")
    if p.is_dir() or (p.is_file() and (p.suffix.lower() == ".dcm" or is_dicom_file(p))):
        # a DICOM series (its folder) or one of its instances: OpenSlide reads DICOM WSI
        if backend not in ("auto", "openslide"):
            raise SlideReadError(f"{p}: a DICOM slide (or a folder) is read by OpenSlide, not the {backend} backend")
        return DicomSlide(p, mpp_override=mpp)
    if not p.is_file():
        raise SlideReadError(f"{p}: not a file")
    check_companions(p)

    if backend == "openslide":
        from histoflow.slide.openslide import OpenSlideSlide

        return OpenSlideSlide(p, mpp_override=mpp)
    if backend == "tifffile":
        from histoflow.slide.tiff import TiffSlide

        return TiffSlide(p, mpp_override=mpp)
    if backend == "image":
        from histoflow.slide.image import ImageSlide

        return ImageSlide(p, mpp_override=mpp)
    if backend == "array":
        raise ConfigError(
            f"{p}: the array backend takes a numpy array, not a file (use histoflow.slide.array.ArraySlide)"
        )

    tried = []
    suffix = p.name.lower()
    if not suffix.endswith(IMAGE_SUFFIXES):
        from histoflow.slide.openslide import OpenSlideSlide, openslide_format

        fmt = openslide_format(p)
        if fmt == "generic-tiff":
            # a plain tiled pyramid: tifffile decodes its tiles directly, faster than OpenSlide
            # with the same pixels (bench/bench_tiling.py); OpenSlide stays the fallback
            try:
                from histoflow.slide.tiff import TiffSlide

                return TiffSlide(p, mpp_override=mpp)
            except SlideReadError as exc:
                log.info("%s: tifffile cannot read it (%s); using OpenSlide", p, exc)
        if fmt is not None:
            slide = OpenSlideSlide(p, mpp_override=mpp)
            if fmt == "aperio":
                slide.level0 = same_level0_pixels(slide)
            return slide
        tried.append("openslide")
        if _is_tiff(p):
            from histoflow.slide.tiff import TiffSlide

            return TiffSlide(p, mpp_override=mpp)
        tried.append("tifffile")
    from histoflow.slide.image import ImageSlide, pil_can_read

    if pil_can_read(p):
        return ImageSlide(p, mpp_override=mpp)
    tried.append("image")
    raise SlideReadError(f"{p}: unsupported or unreadable slide format (tried backends: {', '.join(tried)})")
