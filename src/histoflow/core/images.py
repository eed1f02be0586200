"""Decode one patch image to an RGB uint8 array, with errors that name the file.

JPEG goes through simplejpeg (libjpeg-turbo, about twice PIL's rate on 96 px patches);
everything else through PIL. Non-RGB images (RGBA, grayscale, palette, 16-bit) are converted
to 8-bit RGB or refused, as the caller's `non_rgb` policy says.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from histoflow.core.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NON_RGB_POLICIES = ("convert", "raise")

try:  # optional fast path; PIL is the fallback
    import simplejpeg
except ImportError:  # pragma: no cover
    simplejpeg = None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def decode_bytes(data: bytes, source: str, non_rgb: str = "convert") -> np.ndarray:
    """Decode encoded image bytes; `source` names the file in error messages."""
    if simplejpeg is not None and data[:2] == b"\xff\xd8":
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            pass  # unusual JPEG (CMYK, 12-bit, truncated): let PIL decide and word the error
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return to_rgb_array(img, source, non_rgb)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{source}: cannot decode image ({exc})") from exc


FIRST_READ = 1 << 16  # one read() takes a whole patch file of up to 64 KiB


def read_file(path: str | bytes | os.PathLike) -> bytes:
    """A file's bytes via os.open/os.read (raises OSError).

    The hot path of every epoch. Against Path.read_bytes it skips the io objects and the fstat
    (which builds a 20-field stat_result): about half the time per small file, and fewer steps
    under the GIL for the other decode thread to wait on. Bigger files are read on to the end.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, FIRST_READ)
        if len(data) == FIRST_READ:
            parts = [data]
            while part := os.read(fd, 1 << 20):
                parts.append(part)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)


def decode_jpeg_into(out: np.ndarray, data: bytes) -> bool:
    """Decode a JPEG of exactly out's height and width into `out` (HxWx3 uint8) in place;
    False for anything else (another size or format, corrupt data), which the caller then
    decodes the general way so that errors are worded in one place.

    No separate header parse: simplejpeg refuses an image too big for the buffer and returns a
    view of the image's own shape, so a smaller one shows up in that shape.
    """
    if simplejpeg is None or data[:2] != b"\xff\xd8":
        return False
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out).shape == out.shape
    except ValueError:
        return False


def read_image(path: str | Path, non_rgb: str = "convert") -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB."""
    try:
        data = read_file(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc})") from exc
    if not data:
        raise DataError(f"{path}: file is empty (0 bytes)")
    return decode_bytes(data, str(path), non_rgb)


def to_rgb_array(img: Image.Image, source: str, non_rgb: str = "convert") -> np.ndarray:
    """PIL image -> HxWx3 uint8, converting or refusing non-RGB modes."""
    if img.mode == "RGB":
        return np.array(img)  # writable: torch.from_numpy needs it
    if non_rgb == "raise":
        raise DataError(f"{source}: image mode {img.mode!r} is not 8-bit RGB (set non_rgb: convert to convert it)")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: keep the top 8 bits, the usual display mapping
        arr = np.asarray(img).astype(np.uint32)
        top = arr.max() if arr.size else 0
        shift = 8 if top > 255 else 0
        gray = (arr >> shift).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent areas are glass, not black tissue.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def image_mode(path: str | Path) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (width, height)) from the header only."""
    with Image.open(path) as img:
        return img.mode, img.size
