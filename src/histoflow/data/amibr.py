"""AMi-Br (Bertram et al., BVM 2025): crops of real mitotic figures, and every mitosis inside each crop.

Layout: `<root>/{atypical,normal}/<dataset>_<uid>.png` (128x128 px, cut from the slide at its
own resolution as slide[y-64:y+64, x-64:x+64], black where the crop passes the slide's edge),
`<root>/AMI-BR.csv` (one row per crop: slide, dataset, uid, x, y, expert labels,
majority_atypical) and `<root>/AMI-BR-all.csv` (the same columns for every mitosis of those
slides). A crop therefore knows all the mitoses it shows: the one at its centre and any other
of the same slide whose slide coordinates fall inside it.

Resolution: crops keep their scanner's pixel size. MIDOG 2021 cases 001-050 were scanned on a
Hamamatsu XR, 051-100 on a Hamamatsu S360, 101-150 on an Aperio ScanScope CS2 and 151-200 on a
Leica GT450 (Aubreville et al., MIDOG 2021 / MIDOG++ data descriptions); the nominal mpp below
are those papers' figures, TUPAC16's auxiliary set was scanned at 40x, 0.25 um/px (Veta et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.core.errors import DataError
from histoflow.data.manifest import Manifest
from histoflow.data.points import PointSet, atypia_labels

CROP_PX = 128
TUPAC16_MPP = 0.25
# (first case, last case, scanner, nominal um/px) of MIDOG 2021's training set
MIDOG21_SCANNERS = (
    (1, 50, "Hamamatsu XR", 0.23),
    (51, 100, "Hamamatsu S360", 0.23),
    (101, 150, "Aperio CS2", 0.25),
    (151, 200, "Leica GT450", 0.26),
)
CLASS_FOLDERS = ("atypical", "normal")


def scanner_of(dataset: str, slide: str) -> tuple[str, float]:
    """(scanner, nominal mpp) of an AMi-Br slide."""
    if dataset == "TUPAC16":
        return "TUPAC16", TUPAC16_MPP
    if dataset == "MIDOG21" and Path(slide).stem.isdigit():
        case = int(Path(slide).stem)
        for first, last, scanner, mpp in MIDOG21_SCANNERS:
            if first <= case <= last:
                return scanner, mpp
    raise DataError(f"AMi-Br: unknown dataset/slide {dataset}/{slide} (expected MIDOG21 case 1-200 or TUPAC16)")


@dataclass
class AmiBr:
    """`crops`: one row per crop file: path, image (file name), slide (`<dataset>/<slide>`, the
    grouping key), dataset, uid, x, y (slide pixels of its centre), label (atypical/normal),
    scanner, mpp. `points`: every mitosis inside every crop, in crop pixels, labelled
    atypical/normal, with `centre` (the crop's own figure) and `uid`."""

    crops: pd.DataFrame
    points: PointSet
    root: Path
    crop_px: int = CROP_PX

    def atypia_manifest(self) -> Manifest:
        """path,label,slide: the normal-vs-atypical task, grouped by slide."""
        frame = self.crops[["path", "label", "slide"]].copy()
        return Manifest(frame, ["normal", "atypical"], "csv", str(self.root / "AMI-BR.csv"))


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: AMi-Br table not found (expected AMI-BR.csv and AMI-BR-all.csv in the folder)")
    table = pd.read_csv(path, dtype={"slide": str, "dataset": str})
    missing = sorted({"slide", "dataset", "uid", "x", "y", "majority_atypical"} - set(table.columns))
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}")
    if table.duplicated(["dataset", "uid"]).any():
        raise DataError(f"{path}: (dataset, uid) pairs given twice")
    return table


def read_amibr(root: str | Path, crop_px: int = CROP_PX) -> AmiBr:
    """The crops and every mitosis inside each, from an AMi-Br folder."""
    root = Path(root)
    crops = _read_table(root / "AMI-BR.csv")
    everything = _read_table(root / "AMI-BR-all.csv")
    crops["label"] = atypia_labels(crops["majority_atypical"], str(root / "AMI-BR.csv"))
    crops["image"] = crops["dataset"] + "_" + crops["uid"].astype(str) + ".png"
    crops["path"] = [str(root / lbl / name) for lbl, name in zip(crops["label"], crops["image"])]
    missing = [p for p in crops["path"] if not Path(p).is_file()]
    if missing:
        raise DataError(f"{root}: {len(missing)} crop file(s) listed in AMI-BR.csv are missing, e.g. {missing[:3]}")
    scanners = [scanner_of(d, s) for d, s in zip(crops["dataset"], crops["slide"])]
    crops["scanner"] = [s for s, _ in scanners]
    crops["mpp"] = [m for _, m in scanners]
    crops["slide"] = crops["dataset"] + "/" + crops["slide"]
    everything["slide"] = everything["dataset"] + "/" + everything["slide"]
    points = crop_points(crops, everything, crop_px)
    columns = ["path", "image", "slide", "dataset", "uid", "x", "y", "label", "scanner", "mpp"]
    return AmiBr(crops[columns].reset_index(drop=True), points, root, crop_px)


def crop_points(crops: pd.DataFrame, everything: pd.DataFrame, crop_px: int = CROP_PX) -> PointSet:
    """Every mitosis of `everything` inside each crop of `crops`, in crop pixels.

    A crop centred on slide pixel (x, y) covers slide columns x - crop_px/2 ... x + crop_px/2 - 1
    (and rows likewise), so a mitosis at (x + dx, y + dy) lies at crop pixel
    (crop_px/2 + dx, crop_px/2 + dy) when that is inside [0, crop_px)."""
    half = crop_px // 2
    everything = everything.assign(label=atypia_labels(everything["majority_atypical"], "AMI-BR-all.csv"))
    by_slide = {slide: rows for slide, rows in everything.groupby("slide")}
    rows = []
    for crop in crops.itertuples(index=False):
        others = by_slide.get(crop.slide)
        if others is None or not (others["uid"] == crop.uid).any():
            raise DataError(
                f"AMI-BR-all.csv lacks crop {crop.image}'s own mitosis (slide {crop.slide}, uid {crop.uid})"
            )
        cx = others["x"].to_numpy() - crop.x + half
        cy = others["y"].to_numpy() - crop.y + half
        inside = (cx >= 0) & (cx < crop_px) & (cy >= 0) & (cy < crop_px)
        for i in np.flatnonzero(inside):
            uid = others["uid"].iloc[i]
            rows.append(
                {
                    "image": crop.image,
                    "x": float(cx[i]),
                    "y": float(cy[i]),
                    "label": others["label"].iloc[i],
                    "centre": bool(uid == crop.uid),
                    "uid": int(uid),
                }
            )
    points = pd.DataFrame(rows)
    images = pd.DataFrame(
        {"image": crops["image"], "width": crop_px, "height": crop_px, "mpp": crops["mpp"].astype(float)}
    )
    return PointSet(points, images, "AMI-BR-all.csv")
