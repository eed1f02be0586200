"""Reading an overlay (catalog.Overlay) into what the page draws, and rasters into PNG.

Rasters (probability and attention grids, tissue masks) are images placed over a level-0 box;
the server colours them (colour map, threshold) so the page stays a few lines per overlay and a
10,000-cell grid costs one small PNG. Vectors (GeoJSON, detections, tile grids, the mitotic
hotspot) go to the page as features.py's compact form and are drawn on a canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from histoflow.core.errors import DataError
from histoflow.viewer import features
from histoflow.viewer.catalog import Overlay
from histoflow.viewer.colours import DEFAULT_COLOURMAP, colourise, encode_png

MAX_RASTER_PX = 4096  # long side of a rendered grid: cells stay sharp at any zoom without big PNGs
MASK_RGB = (255, 200, 0)  # amber: apart from every colour map's hues at low opacity


@dataclass
class Loaded:
    """An overlay read from its file(s): a raster (values over `bounds`) or vector `features`."""

    values: np.ndarray | None = None  # float grid (NaN: no value) or bool mask
    bounds: tuple[float, float, float, float] | None = None  # level-0 x, y, width, height
    vmin: float = 0.0
    vmax: float = 1.0
    features: dict | None = None
    meta: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """What the page needs to list and place the overlay, without its data."""
        if self.features is not None:
            f = self.features
            return {
                "type": "vector",
                "count": f["count"],
                "skipped": f["skipped"],
                "value_name": f["value_name"],
                "value_range": f["value_range"],
            }
        if self.values is None or self.bounds is None:
            raise DataError("an overlay has neither features nor a raster")  # never built so by load()
        is_mask = self.values.dtype == bool
        return {
            "type": "raster",
            "bounds": list(self.bounds),
            "shape": list(self.values.shape),
            "value_name": None if is_mask else "value",
            "value_range": None if is_mask else [self.vmin, self.vmax],
            "colour_map": None if is_mask else DEFAULT_COLOURMAP,
        }


def load(ov: Overlay, slide_mpp: float | None = None) -> Loaded:
    if ov.error:
        raise DataError(ov.error)
    loader = {
        "grid": _grid,
        "mask": _mask,
        "geojson": lambda o, _m: Loaded(features=features.read_geojson(o.path)),
        "detections": _detections,
        "tile_grid": _tile_grid,
        "box": _hotspot,
    }[ov.kind]
    try:
        return loader(ov, slide_mpp)
    except DataError:
        raise
    except Exception as exc:  # a truncated .npy/.parquet/.png: the overlay's error, not the server's
        raise DataError(f"{ov.path}: cannot read {ov.kind} overlay ({type(exc).__name__}: {exc})") from exc


def _geometry(ov: Overlay) -> dict:
    g = ov.params.get("grid") or {}
    need = ("x0", "y0", "stride_px0", "region_px0", "rows", "cols")
    if not all(isinstance(g.get(k), (int, float)) for k in need) or g["stride_px0"] <= 0:
        raise DataError(f"{ov.path.parent / 'slide.json'}: 'grid' must give {', '.join(need)} (got {g})")
    return g


def _grid(ov: Overlay, _mpp) -> Loaded:
    g = _geometry(ov)
    rows, cols = int(g["rows"]), int(g["cols"])
    if "column" in ov.params:  # a per-tile column of tiles.parquet (MIL attention)
        import pyarrow.parquet as pq

        t = pq.read_table(ov.path, columns=["row", "col", ov.params["column"]]).to_pydict()
        values = np.full((rows, cols), np.nan, np.float32)
        r, c = np.asarray(t["row"], int), np.asarray(t["col"], int)
        v = np.asarray(t[ov.params["column"]], np.float32)
        if len(r) and (r.min() < 0 or c.min() < 0 or r.max() >= rows or c.max() >= cols):
            raise DataError(f"{ov.path}: tile rows/cols fall outside the {rows} x {cols} grid of slide.json")
        top = np.nanmax(v) if v.size else 0.0
        values[r, c] = v / top if top > 0 else v
    else:
        arr = np.load(ov.path, allow_pickle=False)
        k = int(ov.params.get("channel", 0))
        if arr.ndim != 3 or arr.shape[:2] != (rows, cols) or k >= arr.shape[2]:
            raise DataError(
                f"{ov.path}: expected a ({rows}, {cols}, classes) probability grid as slide.json says, got {arr.shape}"
            )
        values = arr[..., k].astype(np.float32)
    pad = (g["region_px0"] - g["stride_px0"]) / 2  # overlapping tiles paint their central square
    bounds = (g["x0"] + pad, g["y0"] + pad, cols * g["stride_px0"], rows * g["stride_px0"])
    return Loaded(values=values, bounds=bounds, vmin=ov.params.get("vmin", 0.0), vmax=ov.params.get("vmax", 1.0))


def _mask(ov: Overlay, _mpp) -> Loaded:
    import cv2

    ds = float(ov.params["downsample"])
    img = cv2.imread(str(ov.path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DataError(f"{ov.path}: not a readable image")
    h, w = img.shape
    return Loaded(values=img > 127, bounds=(0.0, 0.0, w * ds, h * ds))


def _detections(ov: Overlay, _mpp) -> Loaded:
    import pandas as pd

    table = pd.read_csv(ov.path)
    key = ov.params.get("key")
    if key:
        table = table[table[key].astype(str) == ov.params["value"]]
    return Loaded(features=features.from_detections(table, str(ov.path)))


def _tile_grid(ov: Overlay, _mpp) -> Loaded:
    import pyarrow.parquet as pq

    names = pq.read_schema(ov.path).names
    if ov.params.get("source") == "tiling":
        cols = [c for c in ("slide_id", "x", "y", "size_px0", "tissue_fraction") if c in names]
        t = pq.read_table(ov.path, columns=cols, filters=[("slide_id", "=", ov.params["slide_id"])]).to_pydict()
        size = t["size_px0"][0] if t.get("size_px0") else 0
    else:
        cols = [c for c in ("x", "y", "tissue_fraction") if c in names]
        t = pq.read_table(ov.path, columns=cols).to_pydict()
        size = ov.params.get("size_px0") or 0
    if "x" not in t or "y" not in t:
        raise DataError(f"{ov.path}: a tile table needs x and y columns (has {names})")
    return Loaded(features=features.boxes(t["x"], t["y"], float(size), t.get("tissue_fraction")))


def _hotspot(ov: Overlay, mpp) -> Loaded:
    hot = ov.params["hotspot"]
    x0, y0 = float(hot["x0"]), float(hot["y0"])
    if hot.get("x_um") and x0 > 0:
        mpp = float(hot["x_um"]) / x0
    if not mpp:
        raise DataError(f"{ov.path}: the hotspot's size needs the slide's microns per pixel, which is unknown")
    side = math.sqrt(float(hot["area_mm2"])) * 1000.0 / mpp
    ring = [x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side, x0, y0]
    out = features.empty()
    out["polygons"].append({"rings": [ring], "value": None, "color": "#ffd400", "label": ov.name})
    return Loaded(features=features.finish(out))


def render(loaded: Loaded, cmap: str = DEFAULT_COLOURMAP, threshold: float | None = None) -> bytes:
    """A raster overlay as PNG: grids coloured (cells below `threshold` transparent), masks green."""
    values = loaded.values
    if values is None:
        raise DataError("not a raster overlay")
    if values.dtype == bool:
        rgba = np.zeros((*values.shape, 4), np.uint8)
        rgba[values] = (*MASK_RGB, 255)
        return encode_png(rgba)
    rgba = colourise(values, loaded.vmin, loaded.vmax, cmap, threshold)
    rows, cols = values.shape
    k = max(1, min(8, MAX_RASTER_PX // max(rows, cols, 1)))  # the page smooths images: keep cells crisp
    if k > 1:
        rgba = np.repeat(np.repeat(rgba, k, axis=0), k, axis=1)
    return encode_png(rgba)
