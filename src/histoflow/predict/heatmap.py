"""Heatmaps: the probability grid as a PNG beside the slide thumbnail (GeoJSON: predict.geojson).

The map is drawn as the report's slide thumbnails are (evaluate.slide_heatmap, with the colours
of histoflow.core.pictures): the slide in grey, scored tiles opaque in viridis so the colour bar
shows their exact colours, tissue without a score hatched grey.

Coordinates: a probability grid cell (row, col) is the tile whose level-0 top-left is
(col * stride_px0 + x0, row * stride_px0 + y0) and side region_px0. With overlapping tiles a
cell is painted over its central stride x stride square, so neighbours do not overwrite each
other and the picture keeps the grid's true resolution.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np

from histoflow.core.io import atomic_write_bytes
from histoflow.core.pictures import (
    CMAP,
    grey,
    hatch,
    length_text,
    scale_bar_um,
    value_colours,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridGeometry:
    x0: int  # level-0 x of column 0's tile
    y0: int
    stride_px0: int
    region_px0: int
    rows: int
    cols: int

    def to_dict(self) -> dict:
        return {
            "x0": self.x0,
            "y0": self.y0,
            "stride_px0": self.stride_px0,
            "region_px0": self.region_px0,
            "rows": self.rows,
            "cols": self.cols,
        }


def overlay_image(values: np.ndarray, geom: GridGeometry, shape_hw: tuple[int, int], downsample: float) -> np.ndarray:
    """A float image the size of the thumbnail: each tile's value over its cell, NaN elsewhere."""
    out = np.full(shape_hw, np.nan, np.float32)
    pad = (geom.region_px0 - geom.stride_px0) / 2  # overlap: paint the central stride square
    rows, cols = np.nonzero(np.isfinite(values))
    for r, c in zip(rows, cols):
        x = geom.x0 + c * geom.stride_px0 + pad
        y = geom.y0 + r * geom.stride_px0 + pad
        xa, ya = int(round(x / downsample)), int(round(y / downsample))
        xb = max(xa + 1, int(round((x + geom.stride_px0) / downsample)))
        yb = max(ya + 1, int(round((y + geom.stride_px0) / downsample)))
        out[ya:yb, xa:xb] = values[r, c]
    return out


PANEL_PX = 600  # long side of each panel, drawn 1:1 so tile colours and hatching stay exact
DPI = 100


def map_canvas(
    thumbnail: np.ndarray,
    downsample: float,
    values: np.ndarray,
    geom: GridGeometry,
    tissue: np.ndarray | None,
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = CMAP,
) -> np.ndarray:
    """The map as RGB pixels the size of `thumbnail`: the slide in light grey, every scored tile
    opaque in `cmap` (exactly the colour bar's colour of its value), tissue without a score
    hatched grey (histoflow.core.pictures, as the report's slide thumbnails draw it)."""
    import cv2

    h, w = thumbnail.shape[:2]
    canvas = grey(thumbnail)
    overlay = overlay_image(values, geom, (h, w), downsample)
    scored = np.isfinite(overlay)
    if tissue is not None and tissue.any():
        t = cv2.resize(tissue.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        hatch(canvas, t & ~scored)
    canvas[scored] = value_colours(overlay[scored], vmin, vmax, cmap)
    return canvas


def heatmap_figure(
    thumbnail: np.ndarray,
    downsample: float,
    values: np.ndarray,
    geom: GridGeometry,
    tissue: np.ndarray | None = None,
    title: str = "",
    label: str = "probability",
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = CMAP,
    mpp: float | None = None,
):
    """(figure, map axes, colour-bar axes): the slide | its map, a colour bar of the map's own
    colours, a "no score" swatch and a scale bar (from the level-0 `mpp`) on both panels.

    Axes are placed in pixels and each panel shows its image 1:1, so a tile's colour in the
    PNG is the colour bar's colour at its value."""
    import cv2
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    h0, w0 = thumbnail.shape[:2]
    scale = min(1.0, PANEL_PX / max(h0, w0, 1))
    w, h = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    small = cv2.resize(thumbnail[..., :3], (w, h), interpolation=cv2.INTER_AREA) if scale < 1 else thumbnail[..., :3]
    ds = downsample * w0 / w
    canvas = map_canvas(small, ds, values, geom, tissue, vmin, vmax, cmap)
    left, gap, top, head, bottom, bar_w, bar_room = 10, 18, 46, 24, 12, 18, 88
    panel_h = max(h, 190)
    width, height = left + 2 * w + 2 * gap + bar_w + bar_room, top + head + panel_h + bottom
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)

    def box(x: float, y_top: float, bw: float, bh: float) -> tuple[float, float, float, float]:  # px, top left
        return (x / width, 1 - (y_top + bh) / height, bw / width, bh / height)

    y = top + head
    slide_ax = fig.add_axes(box(left, y, w, h))
    map_ax = fig.add_axes(box(left + w + gap, y, w, h))
    slide_ax.imshow(small, interpolation="nearest")
    map_ax.imshow(canvas, interpolation="nearest")
    slide_ax.set_title("slide", fontsize=10)
    map_ax.set_title(f"{label} per tile", fontsize=10)
    for ax in (slide_ax, map_ax):
        ax.set_axis_off()
        if mpp:
            _scale_bar(ax, w, mpp * ds)
    bar_h = max(120, min(h, panel_h) - 44)
    cax = fig.add_axes(box(left + 2 * w + 2 * gap, y, bar_w, bar_h))
    fig.colorbar(ScalarMappable(Normalize(vmin, vmax), matplotlib.colormaps[cmap]), cax=cax, label=label)
    swatch = np.zeros((14, bar_w, 3), np.uint8)
    hatch(swatch, np.ones(swatch.shape[:2], bool))
    sax = fig.add_axes(box(left + 2 * w + 2 * gap, y + bar_h + 14, bar_w, 14))
    sax.imshow(swatch, interpolation="nearest")
    sax.set_axis_off()
    fig.text(
        (left + 2 * w + 2 * gap + bar_w + 5) / width,
        1 - (y + bar_h + 21) / height,
        "tissue,\nno score",
        fontsize=8,
        va="center",
    )
    fig.text(0.5, 1 - 8 / height, title, ha="center", va="top", fontsize=10, wrap=True)
    return fig, map_ax, cax


def _scale_bar(ax, width_px: int, um_per_px: float) -> None:
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    um = scale_bar_um(width_px * um_per_px)
    bar = AnchoredSizeBar(
        ax.transData,
        um / um_per_px,
        length_text(um),
        "lower left",
        pad=0.3,
        borderpad=0.4,
        sep=3,
        color="black",
        frameon=True,
        size_vertical=max(2, width_px / 150),
        fontproperties=FontProperties(size=8),
    )
    bar.patch.set(facecolor="white", alpha=0.85, edgecolor="none")
    ax.add_artist(bar)


def render_heatmap(
    path,
    thumbnail: np.ndarray,
    downsample: float,
    values: np.ndarray,
    geom: GridGeometry,
    tissue: np.ndarray | None = None,
    **options,
) -> None:
    """Write heatmap.png: see `heatmap_figure` (its keyword options are passed on)."""
    import matplotlib.pyplot as plt

    fig = heatmap_figure(thumbnail, downsample, values, geom, tissue, **options)[0]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
