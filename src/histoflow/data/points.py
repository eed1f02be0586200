"""Point annotations (mitoses, nuclei...): one (x, y) per object, in pixels of the image it lies on.

Two layouts become one `PointSet`:
- CSV `image|slide,x,y[,label]` (MIDOG/TUPAC/AMi-Br style; AMi-Br's own CSV labels each point
  by its `majority_atypical` column as `atypical`/`normal`), `read_points_csv`;
- MIDOG++'s COCO-style JSON (`images` with `file_name`, `width`, `height`; `annotations` with
  `bbox` and `category_id`; `categories`), where a point is the centre of its box,
  `read_points_coco`.

A PointSet keeps the images too, so an image with no point is known and is all negative (not
missing). Points outside their image are refused with the rows named; duplicate points (same
image, within `duplicate_px`) are refused, or dropped and counted with `on_duplicate="drop"`.
Microns per pixel travel with each image (`mpp`), so radii can be given in microns.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from histoflow.core.errors import DataError

log = logging.getLogger(__name__)

# `slide` names the image only when no other column does (beside one, it is the grouping key)
IMAGE_COLUMNS = ("image", "file_name", "filename", "path", "slide")
LABEL_COLUMNS = ("label", "majority_atypical", "category")
OnDuplicate = Literal["raise", "drop"]
SHOWN = 10  # rows named in one error message


@dataclass
class PointSet:
    """`points`: image, x, y, label (text, "" when unlabelled) and any extra columns.
    `images`: image, width, height (0 when unknown), mpp (NaN when unknown); every image of the
    set, including those with no points. `dropped`: duplicate points removed on reading."""

    points: pd.DataFrame
    images: pd.DataFrame
    source: str = ""
    dropped: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.points)

    @property
    def image_names(self) -> list[str]:
        return [str(i) for i in self.images["image"]]

    def xy(self, image: str) -> np.ndarray:
        """(N, 2) float x, y of the points on `image` (empty for an image with none)."""
        rows = self.points[self.points["image"] == image]
        return rows[["x", "y"]].to_numpy(dtype=float).reshape(-1, 2)

    def labels(self, image: str) -> list[str]:
        return [str(v) for v in self.points.loc[self.points["image"] == image, "label"]]

    def mpp(self, image: str) -> float | None:
        value = self.images.loc[self.images["image"] == image, "mpp"]
        return float(value.iloc[0]) if len(value) and np.isfinite(value.iloc[0]) else None

    def with_label(self, *labels: str) -> PointSet:
        """Only the points with one of `labels` (every image kept: the others become negatives)."""
        keep = self.points["label"].isin(labels)
        return PointSet(self.points[keep].reset_index(drop=True), self.images, self.source, self.dropped)


def _first_present(columns, candidates, what: str, source: str, required: bool = True) -> str | None:
    for name in candidates:
        if name in columns:
            return name
    if required:
        raise DataError(f"{source}: no {what} column; expected one of {list(candidates)}, found {list(columns)}")
    return None


def atypia_labels(votes: pd.Series, source: str) -> pd.Series:
    """AMi-Br's `majority_atypical` (the experts' majority vote: True/1 = atypical) as
    "atypical"/"normal"; anything else is an error naming `source`. The one reading of that
    column, for point CSVs and for the AMi-Br folder reader alike."""
    truth = votes.astype(str).str.strip().str.lower()
    unknown = ~truth.isin(["true", "false", "1", "0"])
    if unknown.any():
        raise DataError(f"{source}: majority_atypical: expected True/False, got {sorted(set(truth[unknown]))[:5]}")
    return truth.isin(["true", "1"]).map({True: "atypical", False: "normal"})


def _label_text(values: pd.Series, column: str, source: str) -> pd.Series:
    if column == "majority_atypical":
        return atypia_labels(values, source)
    return values.fillna("").astype(str).str.strip()


def _numbers(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():  # the frame's index is the row number in the file, so lines stay right after filtering
        lines = ", ".join(str(i + 2) for i in frame.index[bad.to_numpy()][:SHOWN])
        raise DataError(f"{source}: column {column!r} is not a number on CSV line(s) {lines}")
    return values.to_numpy(dtype=float)


def read_points_csv(
    path: str | Path,
    *,
    image_column: str = "auto",
    label_column: str | None = "auto",
    mpp: float | None = None,
    sizes: dict[str, tuple[int, int]] | None = None,
    images: list[str] | None = None,
    on_duplicate: OnDuplicate = "raise",
    duplicate_px: float = 0.0,
) -> PointSet:
    """Points from a CSV with an image (or slide) column, x, y and an optional label.

    `mpp`: microns per pixel of every image, unless the CSV has an `mpp` column. `sizes`
    (image -> (width, height)) lets points outside their image be refused; `images` lists
    images that belong to the set even without points (all negative), and so does a row with an
    image and empty x and y (`field_07.png,,`), which is how a CSV lists such an image itself."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    table = table.drop(columns=[c for c in table.columns if c == "" or c.startswith("Unnamed:")])
    image_col = (
        _first_present(table.columns, IMAGE_COLUMNS, "image", str(path)) if image_column == "auto" else image_column
    )
    for col in (image_col, "x", "y"):
        if col not in table.columns:
            raise DataError(f"{path}: missing column {col!r}; found {list(table.columns)}")
    label_col = (
        _first_present(table.columns, LABEL_COLUMNS, "label", str(path), required=False)
        if label_column == "auto"
        else label_column
    )
    if label_col is not None and label_col not in table.columns:
        raise DataError(f"{path}: no label column {label_col!r}; found {list(table.columns)}")
    blank = table.index[table[image_col].str.strip() == ""]
    if len(blank):
        raise DataError(f"{path}: empty {image_col!r} on CSV line(s) {', '.join(str(i + 2) for i in blank[:SHOWN])}")
    listed = table[image_col][(table["x"].str.strip() == "") & (table["y"].str.strip() == "")]
    mpp_rows = table
    table = table.drop(index=listed.index)
    points = table.drop(columns=[c for c in ("x", "y") if c in table.columns]).copy()
    points = points.rename(columns={image_col: "image"})
    points["x"] = _numbers(table, "x", str(path))
    points["y"] = _numbers(table, "y", str(path))
    points["label"] = _label_text(table[label_col], label_col, str(path)) if label_col else ""
    points["line"] = table.index.to_numpy() + 2  # CSV line of each point, for error messages
    if "mpp" in mpp_rows.columns:
        point_mpp = _numbers(mpp_rows, "mpp", str(path))
        per_image = pd.Series(point_mpp).groupby(mpp_rows[image_col].to_numpy()).agg(["min", "max"])
        clash = per_image[per_image["min"] != per_image["max"]]
        if len(clash):
            raise DataError(f"{path}: images with two mpp values: {list(clash.index[:SHOWN])}")
        mpp_of = per_image["min"].to_dict()
    else:
        mpp_of = {}
    names = list(dict.fromkeys([*(images or []), *points["image"], *listed]))
    frame = pd.DataFrame({"image": names})
    frame["width"] = [int((sizes or {}).get(n, (0, 0))[0]) for n in names]
    frame["height"] = [int((sizes or {}).get(n, (0, 0))[1]) for n in names]
    frame["mpp"] = [float(mpp_of.get(n, mpp if mpp is not None else np.nan)) for n in names]
    return finish(points, frame, str(path), on_duplicate, duplicate_px)


def read_points_coco(
    path: str | Path,
    *,
    mpp: float | None = None,
    categories: list[str] | None = None,
    bbox_format: Literal["xyxy", "xywh"] = "xyxy",
    on_duplicate: OnDuplicate = "raise",
    duplicate_px: float = 0.0,
) -> PointSet:
    """Points from a COCO-style JSON: each annotation's box centre, labelled by its category name.

    MIDOG 2021 and MIDOG++ store boxes as [x1, y1, x2, y2] (50 px around each figure), COCO itself
    as [x, y, width, height]: `bbox_format` says which. Without `categories` every annotation is
    kept, labelled by its category's name (MIDOG++: "mitotic figure" and "non-mitotic figure",
    the look-alikes; MIDOG 2021: "mitotic figure" and "hard negative"); `categories` keeps only
    those names (e.g. ["mitotic figure"]), so the others' places become unlabelled background.
    Every listed image is kept, with or without annotations. An image entry's own `mpp` key, if
    present, wins over `mpp`."""
    path = Path(path)
    try:
        blob = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    for key in ("images", "annotations"):
        if not isinstance(blob, dict) or not isinstance(blob.get(key), list):
            raise DataError(f"{path}: expected a COCO-style object with an {key!r} list")
    try:
        images = pd.DataFrame(
            {
                "id": [im["id"] for im in blob["images"]],
                "image": [str(im["file_name"]) for im in blob["images"]],
                "width": [int(im.get("width", 0)) for im in blob["images"]],
                "height": [int(im.get("height", 0)) for im in blob["images"]],
                "mpp": [float(im.get("mpp", np.nan)) for im in blob["images"]],
            }
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: every image needs id and file_name ({exc!r})") from exc
    if images["id"].duplicated().any():
        raise DataError(f"{path}: image ids given twice: {sorted(images['id'][images['id'].duplicated()])[:SHOWN]}")
    names = {c["id"]: str(c["name"]) for c in blob.get("categories", []) if "id" in c and "name" in c}
    rows = []
    file_of = dict(zip(images["id"], images["image"]))
    for i, ann in enumerate(blob["annotations"]):
        box = ann.get("bbox")
        if ann.get("image_id") not in file_of or not isinstance(box, list) or len(box) != 4:
            raise DataError(f"{path}: annotation {i} (id {ann.get('id')}) needs a known image_id and a 4-number bbox")
        x0, y0, a, b = (float(v) for v in box)
        x, y = ((x0 + a) / 2, (y0 + b) / 2) if bbox_format == "xyxy" else (x0 + a / 2, y0 + b / 2)
        category = ann.get("category_id")
        rows.append(
            {
                "image": file_of[ann["image_id"]],
                "x": x,
                "y": y,
                "label": names.get(category, "" if category is None else str(category)),
                "annotation_id": ann.get("id", i),
                "line": i,
            }
        )
    points = pd.DataFrame(rows, columns=["image", "x", "y", "label", "annotation_id", "line"])
    if categories is not None:
        unknown = sorted(set(categories) - set(names.values()))
        if unknown:
            raise DataError(f"{path}: categories {unknown} not in the file (it has {sorted(names.values())})")
        points = points[points["label"].isin(categories)]
    frame = images.drop(columns="id")
    if mpp is not None:
        frame["mpp"] = frame["mpp"].fillna(float(mpp))
    return finish(points, frame, str(path), on_duplicate, duplicate_px, where="annotation")


def finish(
    points: pd.DataFrame,
    images: pd.DataFrame,
    source: str,
    on_duplicate: OnDuplicate = "raise",
    duplicate_px: float = 0.0,
    where: str = "CSV line",
) -> PointSet:
    """Check points against their images' sizes, handle duplicates, return the PointSet."""
    points = points.reset_index(drop=True)
    check_inside(points, images, source, where)
    points, dropped, notes = drop_duplicates(points, source, on_duplicate, duplicate_px, where)
    return PointSet(points.drop(columns="line"), images.reset_index(drop=True), source, dropped, notes)


def check_inside(points: pd.DataFrame, images: pd.DataFrame, source: str, where: str = "CSV line") -> None:
    """Refuse points outside [0, width) x [0, height) of their image (where the size is known)."""
    size = images.set_index("image")[["width", "height"]]
    width = points["image"].map(size["width"]).fillna(0).to_numpy(dtype=float)
    height = points["image"].map(size["height"]).fillna(0).to_numpy(dtype=float)
    x, y = points["x"].to_numpy(dtype=float), points["y"].to_numpy(dtype=float)
    outside = (x < 0) | (y < 0) | ((width > 0) & (x >= width)) | ((height > 0) & (y >= height))
    if outside.any():
        shown = [
            f"{where} {points['line'].iloc[i]}: {points['image'].iloc[i]} ({x[i]:g}, {y[i]:g})"
            + (f" outside {int(width[i])}x{int(height[i])}" if width[i] else " is negative")
            for i in np.flatnonzero(outside)[:SHOWN]
        ]
        raise DataError(f"{source}: {int(outside.sum())} point(s) outside their image: " + "; ".join(shown))


def drop_duplicates(
    points: pd.DataFrame, source: str, on_duplicate: OnDuplicate, duplicate_px: float, where: str = "CSV line"
) -> tuple[pd.DataFrame, int, list[str]]:
    """Points of one image within `duplicate_px` of an earlier one (0: the same coordinates).

    Found with a KD-tree per image (scipy cKDTree.query_pairs), so a slide with thousands of
    points costs milliseconds. "raise" names the pairs; "drop" keeps the first of each pair and
    says how many went, and refuses pairs whose labels disagree (which label is right is not
    for a reader to guess)."""
    from scipy.spatial import cKDTree

    if on_duplicate not in ("raise", "drop"):
        raise DataError(f"on_duplicate must be 'raise' or 'drop', got {on_duplicate!r}")
    later: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _, rows in points.groupby("image", sort=False):
        if len(rows) < 2:
            continue
        index = rows.index.to_numpy()
        tree = cKDTree(rows[["x", "y"]].to_numpy(dtype=float))
        for a, b in sorted(tree.query_pairs(r=max(duplicate_px, 1e-9))):
            first, second = sorted((index[a], index[b]))
            pairs.append((first, second))
            later.add(second)
    if not pairs:
        return points, 0, []

    def describe(pair: tuple[int, int]) -> str:
        a, b = (points.loc[i] for i in pair)
        return f"{where}s {a['line']} and {b['line']}: {a['image']} ({a['x']:g}, {a['y']:g})"

    if on_duplicate == "raise":
        raise DataError(
            f"{source}: {len(pairs)} duplicate point pair(s) (same image, within {duplicate_px:g} px): "
            + "; ".join(describe(p) for p in pairs[:SHOWN])
            + " (on_duplicate='drop' keeps the first of each)"
        )
    clash = [p for p in pairs if points.loc[p[0], "label"] != points.loc[p[1], "label"]]
    if clash:
        raise DataError(
            f"{source}: {len(clash)} duplicate point pair(s) with different labels: "
            + "; ".join(describe(p) for p in clash[:SHOWN])
        )
    note = f"{len(later)} duplicate point(s) dropped (same image, within {duplicate_px:g} px of an earlier one)"
    log.warning("%s: %s", source, note)
    return points.drop(index=sorted(later)).reset_index(drop=True), len(later), [note]
