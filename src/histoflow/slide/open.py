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
from histoflow.slide.openslide import same_level0_pixels

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".ome.tif", ".ome.tiff")


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


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
