"""Heatmaps (PNG over the slide thumbnail) and GeoJSON that QuPath imports as annotations.

Coordinates: a probability grid cell (row, col) is the tile whose level-0 top-left is
(col * stride_px0 + x0, row * stride_px0 + y0) and side region_px0. With overlapping tiles a
cell is painted over its central stride x stride square, so neighbours do not overwrite each
other and the picture keeps the grid's true resolution.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass

import numpy as np

from histoflow.core.io import atomic_write_bytes

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


def render_heatmap(
    path,
    thumbnail: np.ndarray,
    downsample: float,
    values: np.ndarray,
    geom: GridGeometry,
    tissue: np.ndarray | None = None,
    title: str = "",
    label: str = "probability",
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "jet",
) -> None:
    """Thumbnail | thumbnail with the values overlaid, a colour bar and the tissue outline."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    overlay = overlay_image(values, geom, thumbnail.shape[:2], downsample)
    h, w = thumbnail.shape[:2]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4 * h / max(w, 1) + 0.9), dpi=110, layout="constrained")
    axes[0].imshow(thumbnail)
    axes[0].set_title("slide")
    axes[1].imshow(thumbnail)
    im = axes[1].imshow(
        np.ma.masked_invalid(overlay), cmap=cmap, vmin=vmin, vmax=vmax, alpha=0.55, interpolation="nearest"
    )
    if tissue is not None and tissue.any():
        import cv2

        t = cv2.resize(tissue.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        for ax in axes:
            ax.contour(t, levels=[0.5], colors="lime", linewidths=0.8)
    axes[1].set_title(f"{label} (tissue outline green)")
    for ax in axes:
        ax.set_axis_off()
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02, label=label)
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# -- GeoJSON for QuPath ------------------------------------------------------------------------------
def _feature(rings: list, name: str, cls: str, color: tuple[int, int, int], measurements: dict) -> dict:
    """A polygon annotation: `rings` is one ring of [x, y] points, or the outline and its holes."""
    if not isinstance(rings[0][0], (list, tuple)):
        rings = [rings]
    coords = []
    for ring in rings:
        ring = [[round(float(x), 1), round(float(y), 1)] for x, y in ring]
        if ring[0] != ring[-1]:
            ring.append(ring[0])  # GeoJSON rings are closed
        coords.append(ring)
    # QuPath (0.3+) reads objectType/classification/measurements from the properties
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": coords},
        "properties": {
            "objectType": "annotation",
            "name": name,
            "isLocked": False,
            "classification": {"name": cls, "color": list(color)},
            "measurements": {k: float(v) for k, v in measurements.items()},
        },
    }


def tiles_geojson(xs, ys, values, region_px0: int, threshold: float, cls: str, color=(220, 30, 30)) -> dict:
    """One square annotation per tile at or above the threshold."""
    feats: list[dict] = []
    for x, y, v in zip(xs, ys, values):
        if np.isfinite(v) and v >= threshold:
            x, y = int(x), int(y)
            ring: list[list[float]] = [
                [x, y],
                [x + region_px0, y],
                [x + region_px0, y + region_px0],
                [x, y + region_px0],
            ]
            feats.append(_feature(ring, f"tile {x},{y}", cls, color, {"probability": v}))
    return {"type": "FeatureCollection", "features": feats}


def regions_geojson(values: np.ndarray, geom: GridGeometry, threshold: float, cls: str, color=(220, 30, 30)) -> dict:
    """Connected regions (8-neighbour) of grid cells at or above the threshold, as polygons in
    level-0 px: the exact outline of the cells' painted squares (see overlay_image), holes as
    interior rings, so a region's polygon area is its `area_px0` (cells x stride^2).

    Outlines follow cell edges: contours traced through an upscaled mask (cv2.findContours) run
    through boundary pixel centres and shrank every region by one upscaled pixel (a one-tile
    region of 187 px was drawn 163.6 px wide).
    """
    import cv2

    above = np.nan_to_num(values, nan=-1.0) >= threshold
    feats: list[dict] = []
    if not above.any():
        return {"type": "FeatureCollection", "features": feats}
    n_labels, labels = cv2.connectedComponents(above.astype(np.uint8), connectivity=8)
    s = geom.stride_px0
    pad = (geom.region_px0 - geom.stride_px0) / 2
    for n in range(1, n_labels):
        cells = labels == n
        rings = sorted(_cell_rings(cells), key=lambda r: -abs(_ring_area(r)))  # the outline first, then holes
        polygon = [[[geom.x0 + pad + c * s, geom.y0 + pad + r * s] for c, r in ring] for ring in rings]
        v = values[cells]
        meas = {
            "tiles": int(cells.sum()),
            "mean_probability": float(v.mean()),
            "max_probability": float(v.max()),
            "area_px0": float(cells.sum()) * s**2,
        }
        feats.append(_feature(polygon, f"region {n}", cls, color, meas))
    return {"type": "FeatureCollection", "features": feats}


def _cell_rings(cells: np.ndarray) -> list[list[tuple[int, int]]]:
    """The closed boundaries of a set of grid cells, as rings of (col, row) cell-corner points.

    Every cell edge between a cell in the set and one outside is a directed edge with the cell on
    its right; chaining them gives each boundary once. Where two cells meet only at a corner, the
    left turn is taken, which keeps diagonal neighbours in one outline (8-connectivity).
    """
    padded = np.pad(cells, 1)
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r, c in zip(*np.nonzero(cells)):
        pr, pc = r + 1, c + 1
        if not padded[pr - 1, pc]:
            out.setdefault((c, r), []).append((c + 1, r))  # top, going right
        if not padded[pr, pc + 1]:
            out.setdefault((c + 1, r), []).append((c + 1, r + 1))  # right, going down
        if not padded[pr + 1, pc]:
            out.setdefault((c + 1, r + 1), []).append((c, r + 1))  # bottom, going left
        if not padded[pr, pc - 1]:
            out.setdefault((c, r + 1), []).append((c, r))  # left, going up
    rings = []
    while out:
        # start where one edge leaves (a plain corner): then returning to it closes the ring
        start = next((v for v, ends in out.items() if len(ends) == 1), next(iter(out)))
        ring, here, heading = [], start, None
        while True:
            ring.append(here)
            ends = out[here]
            end = ends[0]
            if len(ends) > 1 and heading is not None:  # a corner shared by two cells: turn left
                left = (heading[1], -heading[0])
                end = next((e for e in ends if (e[0] - here[0], e[1] - here[1]) == left), end)
            ends.remove(end)
            if not ends:
                del out[here]
            heading, here = (end[0] - here[0], end[1] - here[1]), end
            if here == start:
                break
        rings.append(_corners(ring))
    return rings


def _corners(ring: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ring without the points in the middle of a straight run."""
    n = len(ring)
    keep = []
    for i, (x, y) in enumerate(ring):
        (ax, ay), (bx, by) = ring[i - 1], ring[(i + 1) % n]
        if (x - ax) * (by - y) - (y - ay) * (bx - x) != 0:
            keep.append((x, y))
    return keep


def _ring_area(ring) -> float:
    xs, ys = np.array([p[0] for p in ring], float), np.array([p[1] for p in ring], float)
    return 0.5 * float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))


def write_geojson(path, collection: dict) -> None:
    atomic_write_bytes(path, json.dumps(collection).encode())
