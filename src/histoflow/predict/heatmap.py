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
def _feature(ring: list[list[float]], name: str, cls: str, color: tuple[int, int, int], measurements: dict) -> dict:
    ring = [[round(float(x), 1), round(float(y), 1)] for x, y in ring]
    if ring[0] != ring[-1]:
        ring.append(ring[0])  # GeoJSON rings are closed
    # QuPath (0.3+) reads objectType/classification/measurements from the properties
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
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


def regions_geojson(
    values: np.ndarray, geom: GridGeometry, threshold: float, cls: str, color=(220, 30, 30), upscale: int = 8
) -> dict:
    """Connected regions of grid cells at or above the threshold, as polygons in level-0 px.

    The cell mask is upscaled before tracing so the polygon follows cell edges (contours of a
    1-px-per-cell mask would run through cell centres and shrink every region by half a tile).
    Holes are not traced: a region is its outer boundary.
    """
    import cv2

    above = np.nan_to_num(values, nan=-1.0) >= threshold
    feats: list[dict] = []
    if not above.any():
        return {"type": "FeatureCollection", "features": feats}
    m = cv2.resize(
        above.astype(np.uint8), (above.shape[1] * upscale, above.shape[0] * upscale), interpolation=cv2.INTER_NEAREST
    )
    m = np.pad(m, 1)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cell = geom.stride_px0 / upscale
    pad = (geom.region_px0 - geom.stride_px0) / 2
    for n, cnt in enumerate(contours):
        pts = cnt.reshape(-1, 2).astype(np.float64) - 1 + 0.5  # undo the pad; pixel centre -> edge-ish
        if len(pts) < 3:
            continue
        ring = [[geom.x0 + pad + px * cell, geom.y0 + pad + py * cell] for px, py in pts]
        # mean and max probability of the cells inside this region
        inside = np.zeros(m.shape, np.uint8)
        cv2.drawContours(inside, [cnt], -1, 1, thickness=-1)
        cells = inside[1:-1, 1:-1][upscale // 2 :: upscale, upscale // 2 :: upscale].astype(bool) & above
        v = values[cells]
        meas = {
            "tiles": int(cells.sum()),
            "mean_probability": float(v.mean()) if v.size else 0.0,
            "max_probability": float(v.max()) if v.size else 0.0,
            "area_px0": float(cells.sum()) * geom.stride_px0**2,
        }
        feats.append(_feature(ring, f"region {n + 1}", cls, color, meas))
    return {"type": "FeatureCollection", "features": feats}


def write_geojson(path, collection: dict) -> None:
    atomic_write_bytes(path, json.dumps(collection).encode())
