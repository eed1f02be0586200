"""GeoJSON that QuPath imports: every scored tile as a detection with its class probabilities as
measurements (tiles.geojson), and connected regions at or above the threshold as annotations
(regions.geojson). Coordinates are level-0 pixels; see predict.heatmap for the grid geometry.
"""

from __future__ import annotations

import json

import numpy as np

from histoflow.core.io import atomic_write_bytes
from histoflow.core.pictures import class_label, probability_label
from histoflow.predict.heatmap import GridGeometry

NEGATIVE_COLOUR = (70, 120, 200)
POSITIVE_COLOUR = (220, 30, 30)


def _feature(
    rings: list,
    name: str | None,
    cls: str,
    color: tuple[int, int, int],
    measurements: dict,
    object_type: str = "annotation",
) -> dict:
    """A polygon QuPath reads as `object_type` (annotation or detection): `rings` is one ring of
    [x, y] points, or the outline and its holes."""
    if not isinstance(rings[0][0], (list, tuple)):
        rings = [rings]
    coords = []
    for ring in rings:
        ring = [[round(float(x), 1), round(float(y), 1)] for x, y in ring]
        if ring[0] != ring[-1]:
            ring.append(ring[0])  # GeoJSON rings are closed
        coords.append(ring)
    # QuPath (0.3+) reads objectType/classification/measurements from the properties
    properties: dict = {"objectType": object_type}
    if name is not None:
        properties["name"] = name
    if object_type == "annotation":
        properties["isLocked"] = False
    properties["classification"] = {"name": cls, "color": list(color)}
    properties["measurements"] = {k: float(v) for k, v in measurements.items()}
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": coords}, "properties": properties}


def _class_colours(n: int, positive: int) -> list[tuple[int, int, int]]:
    if n == 2:
        return [POSITIVE_COLOUR if k == positive else NEGATIVE_COLOUR for k in range(n)]
    import matplotlib

    tab = matplotlib.colormaps["tab10"]
    return [tuple(int(round(c * 255)) for c in tab(k % 10)[:3]) for k in range(n)]  # type: ignore[misc]


def tiles_geojson(
    xs,
    ys,
    probs: np.ndarray,
    class_names: list[str],
    region_px0: int,
    positive: int,
    threshold: float,
    tissue_fraction=None,
) -> dict:
    """Every scored tile as a QuPath detection (a square in level-0 px) with one measurement per
    class, "P(<class>)", and its tissue fraction: QuPath's measurement maps colour them and its
    measurement table lists them.

    A binary tile is classified as the positive class when its probability is at or above
    `threshold`, else as the other class; with more classes, as its most probable class."""
    probs = np.asarray(probs, np.float64).reshape(len(xs), len(class_names))
    colours = _class_colours(len(class_names), positive)
    names = [probability_label(c) for c in class_names]
    feats: list[dict] = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        p = probs[i]
        if not np.isfinite(p).all():
            continue
        if len(class_names) == 2:
            called = positive if p[positive] >= threshold else 1 - positive
        else:
            called = int(np.argmax(p))
        x, y = int(x), int(y)
        ring = [[x, y], [x + region_px0, y], [x + region_px0, y + region_px0], [x, y + region_px0]]
        meas = dict(zip(names, p))
        if tissue_fraction is not None:
            meas["tissue fraction"] = tissue_fraction[i]
        feats.append(_feature(ring, None, class_label(class_names[called]), colours[called], meas, "detection"))
    return {"type": "FeatureCollection", "features": feats}


def regions_geojson(values: np.ndarray, geom: GridGeometry, threshold: float, cls: str, color=POSITIVE_COLOUR) -> dict:
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
