"""Preview images of a planned slide: the labelled thumbnail, the plain view and the mask.

Written beside each slide's report so a user can see at a glance what was tiled and why:

- thumbnail.png: the slide in its own colours at `thumbnail_px` on the long side (1200 by
  default; a small slide is enlarged), the tissue outline, every planned tile as a box, and
  below the picture a legend that says what the lines are, how many tiles at what resolution,
  and a scale bar from the slide's mpp;
- view.jpg: the low-resolution view the tissue mask was computed from, unmarked, at the mask's
  downsample (report.json `mask_downsample`): the background of the report's slide heatmaps;
- mask.png: the tissue mask (white = tissue).

Kept apart from planning because only the pictures need drawing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from histoflow.core.errors import DataError, HistoflowError
from histoflow.core.pictures import length_text, scale_bar_um
from histoflow.tiling.grid import TileSpec
from histoflow.tiling.tissue import TissueMask

log = logging.getLogger(__name__)
OUTLINE = (0, 200, 0)  # tissue outline: green, a hue H&E never has
TILE_BOX = (20, 20, 20)  # planned tiles: near-black, visible on pink and on glass alike
INK = (0, 0, 0)


@dataclass(frozen=True)
class Caption:
    """What the legend under a thumbnail says."""

    slide_id: str
    dims: tuple[int, int]  # level-0 (width, height)
    mpp: float | None  # level-0 um per px
    tile_px: int
    tile_mpp: float
    tissue_threshold: float


def picture_view(slide, view: np.ndarray, view_downsample: float, long_side: int) -> tuple[np.ndarray, float]:
    """The slide at `long_side` px on its long side and its downsample (level-0 px per px).

    The mask's view is reused when it is fine enough; otherwise the slide is read again at the
    picture's resolution (a small slide is read whole and enlarged). A read that fails costs
    sharpness, not the picture: the view is enlarged instead."""
    import cv2

    w, h = slide.dimensions
    downsample = max(w, h) / long_side
    size = (max(1, round(w / downsample)), max(1, round(h / downsample)))
    if downsample >= view_downsample:
        return cv2.resize(view, size, interpolation=cv2.INTER_AREA), downsample
    try:
        img = slide.read_downsampled(max(1.0, downsample))
    except HistoflowError as exc:
        log.warning("%s: thumbnail read failed (%s); the mask's view is enlarged instead", slide.slide_id, exc)
        img = view
    if (img.shape[1], img.shape[0]) != size:
        up = size[0] > img.shape[1]
        img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR if up else cv2.INTER_AREA)
    return img, downsample


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def draw_overview(
    image: np.ndarray,
    downsample: float,
    mask: TissueMask,
    specs: Sequence[TileSpec],
    region_px0: int,
    caption: Caption,
) -> np.ndarray:
    """The slide `image` (at `downsample`) with the tissue outline and every planned tile drawn,
    and a legend with a scale bar below it."""
    import cv2

    h, w = image.shape[:2]
    img = np.ascontiguousarray(image[..., :3]).copy()
    line = max(1, round(max(w, h) / 600))
    for s in specs:
        x0, y0 = round(s.x / downsample), round(s.y / downsample)
        x1, y1 = round((s.x + region_px0) / downsample) - 1, round((s.y + region_px0) / downsample) - 1
        cv2.rectangle(img, (x0, y0), (max(x0, x1), max(y0, y1)), TILE_BOX, 1)
    tissue = cv2.resize(mask.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(tissue, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, OUTLINE, line, lineType=cv2.LINE_AA)
    legend = _legend(w, downsample, mask, len(specs), caption, line)
    return np.concatenate([img, legend], axis=0)


def _legend(width: int, downsample: float, mask: TissueMask, n_tiles: int, cap: Caption, line: int) -> np.ndarray:
    """The strip under the picture: title, what each mark means, scale bar."""
    from PIL import Image, ImageDraw

    size = max(13, round(width / 55))
    font, bold = _font(size), _font(round(size * 1.1))
    row, pad, swatch = round(size * 1.45), round(size * 0.6), round(size * 1.6)
    strip = Image.new("RGB", (width, pad * 2 + row * 5), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    w0, h0 = cap.dims
    res = f" at {cap.mpp:g} um/px" if cap.mpp else " (no mpp in the file)"
    draw.text((pad, pad), f"{cap.slide_id}: {w0} x {h0} px{res}", fill=INK, font=bold)
    y = pad + row
    mid = y + row // 2
    draw.line([(pad, mid), (pad + swatch, mid)], fill=OUTLINE, width=line)
    draw.text((pad * 2 + swatch, y), f"tissue outline ({mask.tissue_fraction:.0%} of the slide)", fill=INK, font=font)
    y += row
    draw.rectangle([pad, y + 2, pad + swatch, y + row - 4], outline=TILE_BOX, width=1)
    draw.text(
        (pad * 2 + swatch, y),
        f"{n_tiles} tiles: {cap.tile_px} px at {cap.tile_mpp:g} um/px, >= {cap.tissue_threshold:.0%} tissue",
        fill=INK,
        font=font,
    )
    y += row
    if cap.mpp:
        um = scale_bar_um(width * downsample * cap.mpp)
        bar = max(1, round(um / (cap.mpp * downsample)))
        mid = y + row // 2
        draw.rectangle([pad, mid - max(2, line), pad + bar, mid + max(2, line)], fill=INK)
        draw.text((pad * 2 + bar, y), length_text(um), fill=INK, font=font)
    else:
        draw.text((pad, y), "no scale bar: the slide file gives no mpp", fill=INK, font=font)
    y += row
    draw.text((pad, y), "QC rejections (glass, blur) are counted in report.json", fill=(90, 90, 90), font=font)
    return np.asarray(strip)


def png_bytes(arr: np.ndarray) -> bytes:
    import cv2

    return _encode(arr, ".png", [cv2.IMWRITE_PNG_COMPRESSION, 6])


def jpeg_bytes(arr: np.ndarray, quality: int = 90) -> bytes:
    import cv2

    return _encode(arr, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])


def _encode(arr: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    import cv2

    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(ext, arr, params or [])
    if not ok:  # pragma: no cover
        raise DataError(f"cannot encode preview {ext}")
    return buf.tobytes()
