"""PNG/JPEG/BMP (and small plain TIFF) images as one-level slides.

These formats cannot be read by region, so the image is decoded once and kept; images too
large for that are refused with a hint to convert them to a tiled pyramidal TIFF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histoflow.core.errors import SlideReadError
from histoflow.slide.array import ArraySlide
from histoflow.slide.base import reopen

MAX_PIXELS = 400_000_000  # 1.2 GB decoded; beyond that, ask for a tiled format


def pil_can_read(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:
        return False


class ImageSlide(ArraySlide):
    backend = "image"

    def __init__(self, path: str | Path, mpp_override: float | None = None):
        from PIL import Image

        try:
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise SlideReadError(
                        f"{path}: {img.width}x{img.height} image is too large to decode whole; "
                        "convert it to a tiled pyramidal TIFF"
                    )
                vendor = img.format
                img.load()
                arr = np.asarray(img.convert("RGB"))
        except SlideReadError:
            raise
        except Exception as exc:  # truncated PNG/JPEG, decompression bomb...
            raise SlideReadError(f"{path}: cannot decode image ({exc})") from exc
        # dpi in PNG/JPEG headers is almost always a 72/96 dpi default, never a scan resolution:
        # mpp comes from the caller or stays unknown.
        super().__init__(arr, mpp=mpp_override, path=str(path), vendor=vendor, levels=1)
        if mpp_override is not None:
            self.mpp_source = "override"

    def __reduce__(self):
        # reopen the file, as every file-backed reader does: pixels never travel between processes
        return (reopen, (type(self), self.path, self.mpp if self.mpp_source == "override" else None))
