"""Small per-slide heatmaps for the report's slide table: tile values over a grey slide thumbnail.

A reviewer scanning a table of slides needs to see at a glance where the score came from, so
each thumbnail is small (long side `max_px`, 256 by default) and honest to read:

- the slide is drawn in light grey, so no stain colour can be mistaken for a score;
- scored tiles are painted opaque in a perceptually uniform colormap (viridis), so the colour
  bar beside the map shows exactly the colours on it (a translucent overlay would mix them with
  the stain and no bar could match);
- tissue without a score (tiles that failed, tissue below the tile threshold) is hatched grey,
  which no colormap value looks like, so "not scored" never reads as "scored low";
- higher values are painted last, so where tiles overlap the most suspicious one shows.

The background is the tiling run's slides/<slide_id>/thumbnail.png (its downsample is in that
slide's report.json) and mask.png; without them the map is drawn on white.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.core.io import atomic_write_bytes
from histoflow.core.pictures import CMAP, grey, hatch, value_colours
from histoflow.tiling.shards import slide_dir

log = logging.getLogger(__name__)

LEGEND_PX = 76  # width of the colour-bar strip right of the map
MIN_HEIGHT = 130  # the colour bar needs some height even for a very wide slide


@dataclass
class Background:
    """A slide thumbnail, its downsample (level-0 px per thumbnail px) and an optional tissue mask
    (any size; it is stretched over the thumbnail)."""

    image: np.ndarray | None
    downsample: float
    tissue: np.ndarray | None = None
    dims: tuple[int, int] | None = None  # level-0 (width, height) when known


def _read_png(path: Path) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB") if img.mode != "L" else img)
    except OSError as exc:
        log.warning("%s: unreadable (%s); heatmap drawn without it", path, exc)
        return None


def tiling_background(tiling_dir: str | Path, slide_id: str) -> Background | None:
    """The background of one slide from a `histoflow tile` output folder, or None when it has
    neither a usable thumbnail nor the slide's dimensions.

    The picture is view.jpg, the unmarked view the mask was made from; runs tiled before it
    existed have their thumbnail.png at the mask's size instead (a newer, labelled thumbnail,
    with its legend below, is never used as a background). The downsample comes from
    report.json (`slide.mask_downsample`), else from the level-0 width over the picture's
    width; without either the picture cannot be placed and the map is drawn on white at the
    slide's dimensions.
    """
    d = slide_dir(Path(tiling_dir), slide_id)
    report: dict = {}
    if (d / "report.json").is_file():
        try:
            report = json.loads((d / "report.json").read_text()).get("slide") or {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("%s: report.json unreadable", d)
    levels = report.get("levels") or []
    dims = (int(levels[0]["width"]), int(levels[0]["height"])) if levels else None
    mask = _read_png(d / "mask.png") if (d / "mask.png").is_file() else None
    tissue = None if mask is None else (mask if mask.ndim == 2 else mask[..., 0]) > 127
    image = _read_png(d / "view.jpg") if (d / "view.jpg").is_file() else None
    if image is None and (d / "thumbnail.png").is_file():
        old = _read_png(d / "thumbnail.png")
        if old is not None and (mask is None or old.shape[:2] == mask.shape[:2]):
            image = old
    ds = report.get("mask_downsample")
    if image is not None and not ds and dims:
        ds = dims[0] / image.shape[1]
    if image is not None and ds:
        return Background(image, float(ds), tissue, dims)
    if dims:
        return Background(None, 1.0, None, dims)
    return None


def _fit(shape_wh: tuple[float, float], max_px: int) -> tuple[float, int, int]:
    """(map px per level-0 px, map width, map height) for a long side of max_px."""
    w0, h0 = shape_wh
    scale = max_px / max(w0, h0, 1.0)
    return scale, max(1, int(round(w0 * scale))), max(1, int(round(h0 * scale)))


def _base(bg: Background | None, w: int, h: int) -> np.ndarray:
    """The slide in light grey (or white): stain hues would compete with the colormap."""
    import cv2

    if bg is None or bg.image is None:
        return np.full((h, w, 3), 255, np.uint8)
    img = bg.image if bg.image.ndim == 3 else np.repeat(bg.image[..., None], 3, axis=2)
    return grey(cv2.resize(img[..., :3], (w, h), interpolation=cv2.INTER_AREA))  # keeps the outline, faintly


def _legend(height: int, vmin: float, vmax: float, cmap, title: str, ticks) -> np.ndarray:
    """Colour bar (the map's own colours, high at the top), tick labels and the hatch swatch."""
    from PIL import Image, ImageDraw, ImageFont

    strip = np.full((height, LEGEND_PX, 3), 255, np.uint8)
    top, bottom, x0, x1 = 22, height - 30, 6, 18
    ramp = np.linspace(1.0, 0.0, bottom - top)
    strip[top:bottom, x0:x1] = (cmap(ramp)[:, :3] * 255).round().astype(np.uint8)[:, None, :]
    swatch = strip[bottom + 10 : bottom + 22, x0:x1]  # a view: drawn in place, as unscored tissue is
    hatch(swatch, np.ones(swatch.shape[:2], bool))
    img = Image.fromarray(strip)
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=10)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    draw.text((2, 2), title[:13], fill=(0, 0, 0), font=font)
    for value, text in ticks:
        y = top + (vmax - value) / (vmax - vmin or 1.0) * (bottom - top - 1)
        draw.line([(x1, y), (x1 + 3, y)], fill=(0, 0, 0))
        draw.text((x1 + 5, y - 6), str(text)[:9], fill=(0, 0, 0), font=font)
    draw.text((x1 + 5, bottom + 10), "no score", fill=(0, 0, 0), font=font)
    return np.asarray(img)


def slide_heatmap_thumbnail(
    tiles: pd.DataFrame,
    out_png: str | Path,
    background: Background | None = None,
    size_px0: float | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
    title: str = "score",
    ticks: list[tuple[float, str]] | None = None,
    max_px: int = 256,
    cmap: str = CMAP,
) -> Path:
    """Write a small PNG of one slide's tile values; returns its path.

    `tiles`: x, y (level-0 top-left), value (NaN: tile not scored, hatched) and size_px0 (or
    the `size_px0` argument). `background`: see `tiling_background`; None draws on white over
    the tiles' extent. The map's long side is `max_px`; the colour bar adds LEGEND_PX.
    """
    import matplotlib

    colours = matplotlib.colormaps[cmap]
    x = tiles["x"].to_numpy(dtype=np.float64)
    y = tiles["y"].to_numpy(dtype=np.float64)
    size = tiles["size_px0"].to_numpy(dtype=np.float64) if "size_px0" in tiles else np.full(len(x), size_px0 or 0.0)
    if not (size > 0).all():
        raise ValueError("tile sizes unknown: give a size_px0 column or argument")
    values = tiles["value"].to_numpy(dtype=np.float64)
    if background is not None and background.image is not None:
        extent = (background.image.shape[1] * background.downsample, background.image.shape[0] * background.downsample)
    elif background is not None and background.dims:
        extent = (float(background.dims[0]), float(background.dims[1]))
    else:
        extent = (float((x + size).max(initial=1.0)), float((y + size).max(initial=1.0)))
    scale, w, h = _fit(extent, max_px)
    canvas = _base(background, w, h)
    xa = np.clip(np.round(x * scale).astype(int), 0, w - 1)
    ya = np.clip(np.round(y * scale).astype(int), 0, h - 1)
    xb = np.maximum(xa + 1, np.round((x + size) * scale).astype(int))
    yb = np.maximum(ya + 1, np.round((y + size) * scale).astype(int))
    scored = np.isfinite(values)
    covered = np.zeros((h, w), bool)
    for i in np.flatnonzero(scored):
        covered[ya[i] : yb[i], xa[i] : xb[i]] = True
    unscored = np.zeros((h, w), bool)
    if background is not None and background.tissue is not None and background.tissue.any():
        import cv2

        t = cv2.resize(background.tissue.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        unscored |= t
    for i in np.flatnonzero(~scored):
        unscored[ya[i] : yb[i], xa[i] : xb[i]] = True
    unscored &= ~covered
    hatch(canvas, unscored)
    rgb = value_colours(values, vmin, vmax, cmap)
    for i in sorted(np.flatnonzero(scored), key=lambda i: values[i]):  # highest painted last
        canvas[ya[i] : yb[i], xa[i] : xb[i]] = rgb[i]
    height = max(h, MIN_HEIGHT)
    out = np.full((height, w + LEGEND_PX, 3), 255, np.uint8)
    out[:h, :w] = canvas
    ticks = ticks or [(vmin, f"{vmin:g}"), ((vmin + vmax) / 2, f"{(vmin + vmax) / 2:g}"), (vmax, f"{vmax:g}")]
    out[:, w:] = _legend(height, vmin, vmax, colours, title, ticks)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(out).save(buf, format="PNG", optimize=True)
    return atomic_write_bytes(out_png, buf.getvalue())


def safe_name(slide_id: str) -> str:
    """A file name for a slide id (ids may hold characters a file system refuses)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", slide_id).strip("._") or "slide"
