"""Vector overlays in one compact form the page draws: GeoJSON (QuPath's dialect included),
detection tables (mitoses: `x, y, score[, p_atypical]` in level-0 px) and tile grids.

The compact form keeps coordinates as flat lists (the page draws thousands of shapes per frame):

    {"points":   {"x": [...], "y": [...], "value": [...], "label": [...], "info": [{...}, ...]},
     "polygons": [{"rings": [[x0, y0, x1, y1, ...], ...], "value": v, "color": "#rrggbb", "label": s}],
     "lines":    [{"coords": [x0, y0, ...], "value": v, "color": ..., "label": ...}],
     "boxes":    {"size": px0, "x": [...], "y": [...], "value": [...]},
     "value_name": "score", "value_range": [lo, hi], "count": n, "skipped": n}

`value` is what colour maps and thresholds act on: a feature's `score` measurement, else its
`probability`, else one whose name holds "prob" or "score" (predict-slide regions'
`mean_probability`), else its first numeric measurement, else none (drawn in its class colour).
Anything that is not GeoJSON raises DataError naming the file and what was wrong.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from histoflow.core.errors import DataError

VALUE_KEYS = ("score", "probability", "prob", "p", "value")


def empty() -> dict:
    return {
        "points": {"x": [], "y": [], "value": [], "label": [], "info": []},
        "polygons": [],
        "lines": [],
        "boxes": None,
        "value_name": None,
        "value_range": None,
        "count": 0,
        "skipped": 0,
    }


def read_geojson(path: str | Path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: GeoJSON file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    return from_geojson(doc, str(path))


def _features(doc: Any, where: str) -> list:
    if isinstance(doc, list):  # QuPath exports a bare list of features
        return doc
    if not isinstance(doc, dict) or "type" not in doc:
        raise DataError(f"{where}: not GeoJSON (expected a FeatureCollection, a Feature or a list of features)")
    if doc["type"] == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise DataError(f"{where}: FeatureCollection without a 'features' list")
        return feats
    if doc["type"] == "Feature":
        return [doc]
    return [{"type": "Feature", "geometry": doc, "properties": {}}]  # a bare geometry


def _measurements(props: dict) -> dict[str, float]:
    found: dict[str, float] = {}
    m = props.get("measurements")
    if isinstance(m, dict):
        items = list(m.items())
    elif isinstance(m, list):  # QuPath 0.2: [{"name": ..., "value": ...}]
        items = [(d.get("name"), d.get("value")) for d in m if isinstance(d, dict)]
    else:
        items = []
    items += [(k, props[k]) for k in VALUE_KEYS if k in props]
    for k, v in items:
        if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            found.setdefault(k, float(v))
    return found


def _value_key(meas: dict[str, float]) -> str | None:
    """The measurement colour maps act on: score/probability by name (predict-slide's regions
    carry mean_probability beside a tile count), else the first one."""
    named = next((k for k in VALUE_KEYS if k in meas), None)
    return named or next((k for k in meas if "prob" in k.lower() or "score" in k.lower()), next(iter(meas), None))


def _colour(props: dict) -> str | None:
    c = (props.get("classification") or {}).get("color") if isinstance(props.get("classification"), dict) else None
    c = c if c is not None else props.get("color")
    if isinstance(c, list) and len(c) >= 3 and all(isinstance(v, (int, float)) for v in c[:3]):
        return "#{:02x}{:02x}{:02x}".format(*tuple(int(max(0, min(255, v))) for v in c[:3]))
    if isinstance(c, int):  # QuPath packs ARGB into one (signed) int
        c &= 0xFFFFFF
        return f"#{c:06x}"
    return None


def _label(props: dict) -> str:
    cls = props.get("classification")
    name = cls.get("name") if isinstance(cls, dict) else cls if isinstance(cls, str) else None
    return str(name or props.get("name") or props.get("objectType") or "")


def _xy(coord: Any, where: str) -> tuple[float, float]:
    if not isinstance(coord, (list, tuple)) or len(coord) < 2:
        raise DataError(f"{where}: a coordinate must be [x, y], got {coord!r:.60}")
    x, y = coord[0], coord[1]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (x, y)):
        raise DataError(f"{where}: coordinates must be finite numbers, got {coord!r:.60}")
    return float(x), float(y)


def _flat(coords: Any, where: str) -> list[float]:
    if not isinstance(coords, list) or not coords:
        raise DataError(f"{where}: expected a list of [x, y] coordinates")
    out: list[float] = []
    for c in coords:
        out += _xy(c, where)
    return out


def from_geojson(doc: Any, where: str = "GeoJSON") -> dict:
    out = empty()
    pts, value_name = out["points"], None
    for i, feat in enumerate(_features(doc, where)):
        at = f"{where}: feature {i}"
        if not isinstance(feat, dict):
            raise DataError(f"{at}: a feature must be an object")
        geom, props = feat.get("geometry"), feat.get("properties") or {}
        if not isinstance(props, dict):
            raise DataError(f"{at}: 'properties' must be an object")
        if geom is None:
            out["skipped"] += 1
            continue
        if not isinstance(geom, dict) or "type" not in geom:
            raise DataError(f"{at}: 'geometry' must be an object with a 'type'")
        meas = _measurements(props)
        key = _value_key(meas)
        value = meas.get(key) if key else None
        value_name = value_name or key
        colour, label = _colour(props), _label(props)
        kind, coords = geom["type"], geom.get("coordinates")
        if kind in ("Point", "MultiPoint"):
            for c in [coords] if kind == "Point" else coords or []:
                x, y = _xy(c, at)
                pts["x"].append(x)
                pts["y"].append(y)
                pts["value"].append(value)
                pts["label"].append(label)
                pts["info"].append(meas)
        elif kind in ("Polygon", "MultiPolygon"):
            polys = [coords] if kind == "Polygon" else coords
            if not isinstance(polys, list):
                raise DataError(f"{at}: {kind} coordinates must be a list")
            for rings in polys:
                if not isinstance(rings, list) or not rings:
                    raise DataError(f"{at}: a polygon needs at least one ring")
                out["polygons"].append(
                    {"rings": [_flat(r, at) for r in rings], "value": value, "color": colour, "label": label}
                )
        elif kind in ("LineString", "MultiLineString"):
            for line in [coords] if kind == "LineString" else coords or []:
                out["lines"].append({"coords": _flat(line, at), "value": value, "color": colour, "label": label})
        else:  # GeometryCollection and anything unknown: counted, not drawn
            out["skipped"] += 1
    out["value_name"] = value_name
    return finish(out)


def finish(out: dict) -> dict:
    values = [v for v in out["points"]["value"] if v is not None]
    values += [p["value"] for p in out["polygons"] + out["lines"] if p["value"] is not None]
    if out["boxes"] and out["boxes"].get("value"):
        values += [v for v in out["boxes"]["value"] if v is not None]
    if values:
        out["value_range"] = [float(min(values)), float(max(values))]
    boxes = len(out["boxes"]["x"]) if out["boxes"] else 0
    out["count"] = len(out["points"]["x"]) + len(out["polygons"]) + len(out["lines"]) + boxes
    return out


def from_detections(table, where: str) -> dict:
    """Detections (pandas rows with x, y, score[, p_atypical]) as points valued by their score."""
    missing = [c for c in ("x", "y") if c not in table.columns]
    if missing:
        raise DataError(f"{where}: detections need columns x and y (missing {missing}; has {list(table.columns)})")
    out = empty()
    xs = table["x"].to_numpy(float)
    ys = table["y"].to_numpy(float)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise DataError(f"{where}: x and y must be finite numbers in every row")
    extra = [c for c in ("score", "p_atypical") if c in table.columns]
    out["points"]["x"], out["points"]["y"] = xs.tolist(), ys.tolist()
    scores = table["score"].to_numpy(float) if "score" in table.columns else np.full(len(table), np.nan)
    out["points"]["value"] = [None if not np.isfinite(s) else float(s) for s in scores]
    atyp = table["p_atypical"].to_numpy(float) if "p_atypical" in table.columns else np.full(len(table), np.nan)
    out["points"]["label"] = ["atypical mitosis" if p >= 0.5 else "mitosis" for p in np.nan_to_num(atyp, nan=0.0)]
    out["points"]["info"] = [
        {c: float(table[c].iloc[i]) for c in extra if np.isfinite(float(table[c].iloc[i]))} for i in range(len(table))
    ]
    out["value_name"] = "score" if "score" in table.columns else None
    return finish(out)


def boxes(xs, ys, size_px0: float, values=None) -> dict:
    """A tile grid: squares of side `size_px0` at level-0 top-lefts (xs, ys)."""
    out = empty()
    vals = None if values is None else [None if not np.isfinite(v) else float(v) for v in np.asarray(values, float)]
    out["boxes"] = {"size": float(size_px0), "x": np.asarray(xs).tolist(), "y": np.asarray(ys).tolist(), "value": vals}
    return finish(out)
