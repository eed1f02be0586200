"""Your own images with point annotations, in the shape the mitosis window builder takes.

A points file - a CSV `image|file_name|slide,x,y[,label][,mpp]` (MIDOG/TUPAC/AMi-Br style) or a
MIDOG++/COCO JSON (`histoflow.data.points`) - plus the folder its image names are relative to
become what `read_amibr` gives for AMi-Br: one "crop" per image (its path, its slide: the CSV's
`slide` column when it has one beside the image column, else the image itself, so splits never
put one slide in two sets; its mpp) and every point in image pixels. `build_windows` then cuts
candidate-centred windows from whole high-power fields exactly as from AMi-Br crops.

Labels say what a point is:
- mitoses (positives): `mitosis_labels` (MIDOG's "mitotic figure", AMi-Br's normal/atypical...);
  without a label column every point is a mitosis;
- explicit negatives: `negative_labels` (MIDOG++'s "non-mitotic figure" imposters, MIDOG 2021's
  "hard negative"): windows on them are labelled `other`;
- any other label is refused, naming it, rather than guessed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from histoflow.config.mitosis import MITOSIS_LABELS, NEGATIVE_LABELS
from histoflow.core.errors import DataError
from histoflow.core.images import is_image_file
from histoflow.data.manifest import Manifest
from histoflow.data.points import (
    IMAGE_COLUMNS,
    SHOWN,
    OnDuplicate,
    PointSet,
    check_inside,
    read_points_coco,
    read_points_csv,
)

BboxFormat = Literal["xyxy", "xywh"]

log = logging.getLogger(__name__)


def normal_label(text: str) -> str:
    """Lower case, `-`/`_` as spaces, single spaces: "Non-Mitotic_Figure" == "non mitotic figure"."""
    return re.sub(r"\s+", " ", re.sub(r"[-_]", " ", str(text).strip().lower()))


@dataclass
class PointImages:
    """`crops`: one row per image: path, image, slide, mpp, width, height, label (`mitosis` when it
    holds one, else `none`: what splits balance). `points`: the mitoses (image, x, y, label,
    centre=False). `negatives`: the explicit non-mitoses (image, x, y, label)."""

    crops: pd.DataFrame
    points: PointSet
    negatives: pd.DataFrame
    source: Path
    notes: list[str] = field(default_factory=list)

    def strata_manifest(self) -> Manifest:
        """path,label,slide: what a slide-grouped split balances (images with / without mitoses)."""
        return Manifest(self.crops[["path", "label", "slide"]].copy(), ["none", "mitosis"], "csv", str(self.source))


def _image_sizes(paths: dict[str, Path], source: Path) -> dict[str, tuple[int, int]]:
    """(width, height) of each image from its header (PIL decodes no pixels for this)."""
    from PIL import Image, UnidentifiedImageError

    missing = [name for name, p in paths.items() if not p.is_file()]
    if missing:
        where = paths[missing[0]].parent
        raise DataError(
            f"{source}: {len(missing)} image(s) it names are not files, e.g. {missing[:3]} (looked under {where}; "
            "give the folder they are relative to with --images)"
        )
    sizes = {}
    for name, p in paths.items():
        try:
            with Image.open(p) as img:
                sizes[name] = img.size
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{p}: cannot read the image named in {source} ({exc})") from exc
    return sizes


def _read(
    path: Path,
    images_dir: Path,
    mpp: float | None,
    bbox_format: BboxFormat,
    on_duplicate: OnDuplicate,
    duplicate_px: float,
) -> tuple[PointSet, dict[str, str], dict[str, tuple[int, int]]]:
    """(PointSet of every point, image -> slide, image -> size), points checked against image sizes."""
    if path.suffix.lower() == ".json":
        points = read_points_coco(
            path,
            mpp=mpp,
            bbox_format=bbox_format,
            on_duplicate=on_duplicate,
            duplicate_px=duplicate_px,
        )
        sizes = _image_sizes({n: images_dir / n for n in points.image_names}, path)
        images = points.images.set_index("image")
        wrong = [
            f"{n} is {w}x{h}, the JSON says {int(images.at[n, 'width'])}x{int(images.at[n, 'height'])}"
            for n, (w, h) in sizes.items()
            if images.at[n, "width"] and (images.at[n, "width"], images.at[n, "height"]) != (w, h)
        ]
        if wrong:
            raise DataError(f"{path}: image sizes disagree with the files: " + "; ".join(wrong[:SHOWN]))
        # sizes the JSON left out (0) are now known: check the points against them too
        known = points.images.assign(
            width=[sizes[n][0] for n in points.image_names], height=[sizes[n][1] for n in points.image_names]
        )
        rows = points.points.assign(line=points.points["annotation_id"])
        check_inside(rows, known, str(path), "annotation id")
        return PointSet(points.points, known, points.source, points.dropped, points.notes), {}, sizes
    try:
        header = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    image_col = next((c for c in IMAGE_COLUMNS if c in header.columns), None)
    if image_col is None:
        raise DataError(f"{path}: no image column; expected one of {list(IMAGE_COLUMNS)}, found {list(header)}")
    slide_of: dict[str, str] = {}
    if image_col != "slide" and "slide" in header.columns:
        pairs = header[[image_col, "slide"]].drop_duplicates()
        pairs = pairs[pairs["slide"].str.strip() != ""]
        two = pairs[pairs[image_col].duplicated(keep=False)]
        if len(two):
            raise DataError(f"{path}: images with two slide values: {sorted(set(two[image_col]))[:SHOWN]}")
        slide_of = dict(zip(pairs[image_col], pairs["slide"].str.strip()))

    def read(sizes: dict[str, tuple[int, int]] | None) -> PointSet:
        return read_points_csv(
            path, image_column=image_col, mpp=mpp, sizes=sizes, on_duplicate=on_duplicate, duplicate_px=duplicate_px
        )

    sizes = _image_sizes({n: images_dir / n for n in read(None).image_names}, path)
    return read(sizes), slide_of, sizes  # read again, now refusing points outside their image


def read_point_images(
    points_file: str | Path,
    images_dir: str | Path | None = None,
    *,
    mpp: float | None = None,
    mitosis_labels: tuple[str, ...] | list[str] = MITOSIS_LABELS,
    negative_labels: tuple[str, ...] | list[str] = NEGATIVE_LABELS,
    bbox_format: BboxFormat = "xyxy",
    on_duplicate: OnDuplicate = "raise",
    duplicate_px: float = 0.0,
) -> PointImages:
    """Images and their points from a points CSV or COCO JSON; images relative to `images_dir`
    (default: the points file's folder). mpp: the file's, else `mpp`, else refused."""
    path = Path(points_file)
    if not path.is_file():
        raise DataError(f"{path}: points file not found")
    root = Path(images_dir) if images_dir is not None else path.parent
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (for the images of {path})")
    points, slide_of, sizes = _read(path, root, mpp, bbox_format, on_duplicate, duplicate_px)
    images = points.images
    no_mpp = images.loc[~np.isfinite(images["mpp"].to_numpy(dtype=float)), "image"].tolist()
    if no_mpp:
        raise DataError(
            f"{path}: no microns per pixel for {len(no_mpp)} image(s), e.g. {no_mpp[:SHOWN]}: add an `mpp` column "
            "(CSV) or `mpp` key per image (JSON), or give --mpp (e.g. 0.25 for a 40x scan)"
        )
    frame = points.points
    kind = classify_labels(frame, mitosis_labels, negative_labels, path)
    mitoses = frame[kind == "mitosis"][["image", "x", "y", "label"]].assign(centre=False).reset_index(drop=True)
    negatives = frame[kind == "negative"][["image", "x", "y", "label"]].reset_index(drop=True)
    with_mitosis = set(mitoses["image"])
    crops = pd.DataFrame(
        {
            "path": [str(root / n) for n in images["image"]],
            "image": images["image"].astype(str),
            "slide": [slide_of.get(n, n) for n in images["image"]],
            "mpp": images["mpp"].astype(float),
            "width": [sizes[n][0] for n in images["image"]],
            "height": [sizes[n][1] for n in images["image"]],
            "label": ["mitosis" if n in with_mitosis else "none" for n in images["image"]],
        }
    )
    notes = list(points.notes) + unlisted_images(root, set(crops["path"]), path)
    mitosis_set = PointSet(mitoses, images, str(path), points.dropped, notes)
    return PointImages(crops, mitosis_set, negatives, path, notes)


def classify_labels(frame: pd.DataFrame, mitosis_labels, negative_labels, path: Path) -> np.ndarray:
    """`mitosis` / `negative` per point; every point a mitosis when none is labelled."""
    labels = frame["label"].map(normal_label)
    if (labels == "").all():
        return np.full(len(frame), "mitosis", dtype=object)
    positive = {normal_label(v) for v in mitosis_labels}
    negative = {normal_label(v) for v in negative_labels}
    if positive & negative:
        raise DataError(f"labels listed both as mitosis and as negative: {sorted(positive & negative)}")
    kind = np.where(labels.isin(positive), "mitosis", np.where(labels.isin(negative), "negative", ""))
    unknown = sorted(set(frame["label"][kind == ""].astype(str)))
    if unknown:
        raise DataError(
            f"{path}: point label(s) {unknown[:SHOWN]} are neither mitoses nor negatives; say which with "
            f"--set mitosis_labels=[...] or --set negative_labels=[...] (mitoses now: {sorted(positive)})"
        )
    return kind


def unlisted_images(root: Path, used: set[str], path: Path) -> list[str]:
    """A note (and a log line) when image files beside the listed ones are left out: a CSV of
    mitoses says nothing about the fields that hold none."""
    folders = {Path(p).parent for p in used}  # only where the listed images lie: not a whole tree
    others = sorted(p for d in folders for p in d.iterdir() if is_image_file(p) and str(p) not in used)
    if not others:
        return []
    how = "an `images` entry" if path.suffix.lower() == ".json" else "a row with its name and empty x and y"
    note = (
        f"{len(others)} image file(s) beside the listed ones are not named in {path.name} and were not used, "
        f"e.g. {[str(p.relative_to(root)) for p in others[:3]]}; give each {how} to use it as a field without mitoses"
    )
    log.warning("%s", note)
    return [note]
