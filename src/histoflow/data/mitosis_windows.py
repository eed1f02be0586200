"""A mitosis-vs-other window dataset from AMi-Br crops or your own point-annotated images, split by slide.

For every crop (an AMi-Br crop, or one whole image of a points file: histoflow.data.point_images):
candidate nuclei (histoflow.preprocess.nuclei) where a window fits, and every mitosis the crop
holds (histoflow.data.amibr). Windows centred on
- a mitosis, or a candidate within `positive_radius_um` of one: label `mitosis`;
- a candidate at least `match_radius_um` from every mitosis: label `other` (the hard negatives:
  ordinary, apoptotic and dark nuclei next to real mitoses);
- an annotated non-mitosis (MIDOG++'s "non-mitotic figure" imposters) at least
  `match_radius_um` from every mitosis: label `other`, source `imposter`;
- candidates in between are left out: they would be matched to the mitosis at evaluation but
  show it off-centre, so neither label is right.

Output folder (written under a temporary name and renamed when complete, so an interrupted run
never leaves a half-written dataset that looks whole; a finished folder with the same config is
reused):
  windows/<split>/<label>/<crop>_<x>_<y>.png
  windows.csv   path,label,slide,split,image,x,y,source (mitosis|candidate|imposter),density: a histoflow
                CSV manifest, so `histoflow train` trains on it unchanged (its split column is used)
  crops.csv     image,path,slide,split,mpp,x0,y0,x1,y1 (the valid area), for detection evaluation
  points.csv    image,x,y,label,centre,evaluated: every mitosis in every crop; `evaluated` is False
                where no window fits (near the border), and evaluation then ignores it
  windows.json  the config and counts
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.config.mitosis import MitosisWindowsConfig
from histoflow.core.errors import DataError
from histoflow.core.images import read_image
from histoflow.core.io import atomic_path, atomic_write_json
from histoflow.core.progress import progress_bar
from histoflow.data.amibr import AmiBr
from histoflow.data.point_images import PointImages
from histoflow.data.splits import split_manifest
from histoflow.data.windows import Box, cut_windows, fits, valid_box, window_region
from histoflow.preprocess.nuclei import nucleus_candidates

log = logging.getLogger(__name__)
LABELS = ("other", "mitosis")
MPP_SPREAD = 0.12  # DetectConfig.mpp_tolerance's default: images further apart are said to differ


def slide_splits(ami: AmiBr | PointImages, val_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """train/val/test per crop, grouped by slide; stratified by normal/atypical (AMi-Br) or by
    whether an image holds a mitosis (point images, when both kinds are there)."""
    if isinstance(ami, AmiBr):
        manifest = split_manifest(ami.atypia_manifest(), val_fraction, test_fraction, group_by="slide", seed=seed)
        return manifest.frame["split"]
    slides = ami.crops["slide"].nunique()
    needed = 1 + (val_fraction > 0) + (test_fraction > 0)
    if slides < needed:
        raise DataError(
            f"{ami.source}: {slides} slide(s)/image(s) cannot make train/val/test sets split by slide "
            f"(at least {needed} needed); add images, or set split.val_fraction / split.test_fraction to 0"
        )
    manifest = ami.strata_manifest()
    both = manifest.frame["label"].value_counts().reindex(["none", "mitosis"], fill_value=0).min() >= 2
    return split_manifest(manifest, val_fraction, test_fraction, group_by="slide", seed=seed, stratify=both).frame[
        "split"
    ]


def candidate_mask(shape: tuple[int, int], box: Box, window_px: int, border: str) -> np.ndarray:
    """Where candidates may lie: where their window fits (inside), or anywhere valid (reflect)."""
    x0, y0, x1, y1 = window_region(box, window_px) if border == "inside" else box
    mask = np.zeros(shape, dtype=bool)
    mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return mask


def label_candidates(candidates: np.ndarray, mitoses: np.ndarray, positive_px: float, match_px: float) -> np.ndarray:
    """1 mitosis, 0 other, -1 left out, per candidate (by distance to the nearest mitosis)."""
    if not len(mitoses):
        return np.zeros(len(candidates), dtype=int)
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(mitoses).query(candidates[:, :2], k=1)
    return np.where(distance <= positive_px, 1, np.where(distance >= match_px, 0, -1))


def in_box(points: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Which (x, y) points lie inside box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    return (points[:, 0] >= x0) & (points[:, 0] < x1) & (points[:, 1] >= y0) & (points[:, 1] < y1)


def crop_windows(
    rgb: np.ndarray, mitoses: np.ndarray, mpp: float, cfg: MitosisWindowsConfig, negatives: np.ndarray | None = None
) -> dict:
    """Windows and their labels for one crop, with the crop's valid box and which mitoses fit.

    `negatives`: annotated non-mitoses; each gets an `other` window when it lies at least
    `match_radius_um` from every mitosis (nearer, evaluation would match a detection there to
    the mitosis, so, like such candidates, it is left out)."""
    box = valid_box(rgb)
    mask = candidate_mask(rgb.shape[:2], box, cfg.window_px, cfg.border)
    candidates = nucleus_candidates(rgb, mpp, cfg.candidates, mask=mask)
    labels = label_candidates(candidates, mitoses, cfg.positive_radius_um / mpp, cfg.match_radius_um / mpp)
    negatives = np.zeros((0, 2)) if negatives is None else np.asarray(negatives, dtype=float).reshape(-1, 2)
    if cfg.border == "inside":
        evaluated = fits(mitoses, box, cfg.window_px)
    else:  # mirroring needs the point inside the valid area (a figure in black slide-edge fill is not)
        evaluated = in_box(mitoses, box)
        negatives = negatives[in_box(negatives, box)]
    far = (
        label_candidates(negatives, mitoses, 0.0, cfg.match_radius_um / mpp) == 0
        if len(negatives)
        else np.zeros(0, bool)
    )
    n_mit, n_neg = int(evaluated.sum()), int(far.sum())
    centres = np.concatenate([mitoses[evaluated], negatives[far], candidates[labels >= 0, :2]])
    window_labels = np.concatenate([np.ones(n_mit, int), np.zeros(n_neg, int), labels[labels >= 0]])
    source = ["mitosis"] * n_mit + ["imposter"] * n_neg + ["candidate"] * int((labels >= 0).sum())
    density = np.concatenate([np.full(n_mit + n_neg, np.nan), candidates[labels >= 0, 2]])
    windows, kept = cut_windows(rgb, centres, cfg.window_px, cfg.border, box)
    return {
        "box": box,
        "evaluated": evaluated,
        "windows": windows,
        "centres": centres[kept],
        "labels": window_labels[kept],
        "source": [source[i] for i in kept],
        "density": density[kept],
        "candidates": len(candidates),
        "imposters_near_mitoses": int(len(far) - n_neg),
    }


def _finished(out: Path, cfg: MitosisWindowsConfig) -> bool:
    record = out / "windows.json"
    if not (record.is_file() and (out / "windows.csv").is_file()):
        return False
    return json.loads(record.read_text(encoding="utf-8")).get("config") == cfg.model_dump(mode="json")


def window_stem(image: str) -> str:
    """A file-name stem unique per image name (`a/001.tiff` and `b/001.tiff` differ)."""
    return Path(image).with_suffix("").as_posix().replace("/", "__")


def build_windows(ami: AmiBr | PointImages, cfg: MitosisWindowsConfig, out: str | Path, quiet: bool = False) -> dict:
    """Write the window dataset of `ami` into `out` (see the module docstring); returns the summary.

    Images are read one at a time, so memory follows the largest image, not the dataset."""
    import cv2

    out = Path(out)
    if _finished(out, cfg):
        log.info("%s: window dataset already built with this config; reusing it", out)
        return json.loads((out / "windows.json").read_text(encoding="utf-8"))
    leftovers = [p for p in out.iterdir() if p.name != ".windows.partial"] if out.is_dir() else []
    if leftovers and not (out / "windows.json").is_file():  # a killed run leaves only .windows.partial
        raise DataError(f"{out}: folder exists and is not a window dataset; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".windows.partial"
    shutil.rmtree(staging, ignore_errors=True)
    splits = slide_splits(ami, cfg.split.val_fraction, cfg.split.test_fraction, cfg.seed)
    points = ami.points.points
    negatives = ami.negatives if isinstance(ami, PointImages) else pd.DataFrame(columns=["image", "x", "y"])
    rows, crop_rows, point_rows = [], [], []
    imposters = {"annotated": len(negatives), "windows": 0, "near_mitoses": 0}
    with progress_bar(len(ami.crops), "cutting windows", quiet=quiet, unit="crops") as bar:
        for crop, split in zip(ami.crops.itertuples(index=False), splits):
            mine = points[points["image"] == crop.image]
            mitoses = mine[["x", "y"]].to_numpy(dtype=float)
            others = negatives.loc[negatives["image"] == crop.image, ["x", "y"]].to_numpy(dtype=float)
            try:
                cut = crop_windows(read_image(crop.path), mitoses, float(crop.mpp), cfg, others)
            except DataError as exc:
                raise DataError(f"{crop.path}: {exc}") from exc
            imposters["windows"] += sum(s == "imposter" for s in cut["source"])
            imposters["near_mitoses"] += cut["imposters_near_mitoses"]
            stem = window_stem(crop.image)
            for window, (x, y), label, source, density in zip(
                cut["windows"], cut["centres"], cut["labels"], cut["source"], cut["density"]
            ):
                name = f"{stem}_{int(round(x))}_{int(round(y))}_{source[0]}.png"
                path = staging / split / LABELS[label] / name
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), window.transpose(1, 2, 0)[:, :, ::-1])
                rows.append(
                    {
                        # relative to windows.csv (as CSV manifests read it): the folder can move
                        "path": f"windows/{split}/{LABELS[label]}/{name}",
                        "label": LABELS[label],
                        "slide": crop.slide,
                        "split": split,
                        "image": crop.image,
                        "x": float(x),
                        "y": float(y),
                        "source": source,
                        "density": density,
                    }
                )
            x0, y0, x1, y1 = cut["box"]
            crop_rows.append(
                {"image": crop.image, "path": str(Path(crop.path).resolve()), "slide": crop.slide}
                | {"split": split, "mpp": crop.mpp}
                | {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "candidates": cut["candidates"]}
            )
            for (x, y), label, centre, evaluated in zip(mitoses, mine["label"], mine["centre"], cut["evaluated"]):
                point_rows.append(
                    {"image": crop.image, "x": x, "y": y, "label": label, "centre": centre, "evaluated": evaluated}
                )
            bar.advance()
    final = out / "windows"
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    table = pd.DataFrame(rows)
    for name, frame in (("crops.csv", pd.DataFrame(crop_rows)), ("points.csv", pd.DataFrame(point_rows))):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_path(out / "windows.csv") as tmp:
        table.to_csv(tmp, index=False)
    counts = table.groupby(["split", "label"]).size().unstack(fill_value=0)
    summary = {
        "config": cfg.model_dump(mode="json"),
        "crops": int(len(crop_rows)),
        "slides": {s: int(ami.crops["slide"][splits == s].nunique()) for s in ("train", "val", "test")},
        "windows": {s: {k: int(v) for k, v in counts.loc[s].items()} for s in counts.index},
        "mitoses": int(len(point_rows)),
        "mitoses_evaluated": int(sum(p["evaluated"] for p in point_rows)),
        "candidates_per_crop": round(float(np.mean([c["candidates"] for c in crop_rows])), 2),
        "source": str(ami.source if isinstance(ami, PointImages) else ami.root),
    }
    if isinstance(ami, PointImages):
        summary["imposters"] = imposters
        low, high = float(ami.crops["mpp"].min()), float(ami.crops["mpp"].max())
        summary["mpp"] = {"min": low, "max": high}
        notes = list(ami.notes)
        if high > low * (1 + MPP_SPREAD):
            # windows are cut at each image's own resolution: a 48 px window is 12 um at 0.25 um/px
            # but 24 um at 0.5; the detector refuses images this far from its training mpp
            notes.append(
                f"images range from {low:g} to {high:g} um/px: windows show "
                "different physical sizes; resample the images to one mpp, or build one dataset per resolution"
            )
            log.warning("%s: %s", ami.source, notes[-1])
        summary["notes"] = notes
    atomic_write_json(out / "windows.json", summary)
    return summary
