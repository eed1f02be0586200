"""Every patch dataset becomes a Manifest: one table, one row per image.

Columns: `path` (absolute), `label` (class name as text; "" when unlabelled), `patient`, `slide`
and `split` (text, "" when unknown), `item` (row inside a container file such as PCam HDF5, -1
for plain image files), plus layout-specific extras (IDC `x`, `y`; BreakHis `subtype`).

`read_manifest(path, format="auto")` picks a reader per layout; each reader is a small function
registered in READERS, so a new layout is one function away.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.core.errors import DataError
from histoflow.core.images import is_image_file
from histoflow.core.io import atomic_path

log = logging.getLogger(__name__)

COLUMNS = ["path", "label", "patient", "slide", "split", "item"]
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
IDC_NAME = re.compile(r"^(?P<patient>[^_]+)_idx\d+_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<cls>\d+)\.png$", re.I)
# BreakHis originals are SOB_B_A-14-22549AB-40-001.png; some copies use SOB_B_A_14-22549AB_0.png.
BREAKHIS_NAME = re.compile(r"^SOB_(?P<kind>[BM])_(?P<subtype>[A-Z]+)[-_](?P<slide>\d+-\d+[A-Z]*)", re.I)
PCAM_H5 = re.compile(r"camelyonpatch_level_2_split_(?P<split>\w+?)_x\.h5$")
KAGGLE_ID = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Manifest:
    """A table of labelled (or unlabelled) patches and the ordered class names."""

    frame: pd.DataFrame
    class_names: list[str]
    format: str = "csv"
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __post_init__(self) -> None:
        for col in COLUMNS:
            if col not in self.frame.columns:
                self.frame[col] = -1 if col == "item" else ""
        self.frame = self.frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labelled(self) -> bool:
        return bool(len(self.frame)) and bool((self.frame["label"] != "").all())

    @property
    def targets(self) -> np.ndarray:
        """Integer class index per row (-1 where unlabelled)."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return np.array([index.get(lbl, -1) for lbl in self.frame["label"]], dtype=np.int64)

    def subset(self, mask_or_index) -> Manifest:
        frame = (
            self.frame[mask_or_index]
            if isinstance(mask_or_index, (pd.Series, np.ndarray)) and np.asarray(mask_or_index).dtype == bool
            else self.frame.iloc[mask_or_index]
        )
        # `skipped` is a record of the whole data set (what verify left out): it travels with every part
        return Manifest(
            frame.reset_index(drop=True), list(self.class_names), self.format, self.source, list(self.skipped)
        )

    def split(self, name: str) -> Manifest:
        return self.subset((self.frame["split"] == name).to_numpy())

    @property
    def splits(self) -> list[str]:
        return [s for s in ("train", "val", "test") if (self.frame["split"] == s).any()]

    def group_column(self) -> str | None:
        """The column that groups rows from one patient (or slide), if the data has one."""
        for col in ("patient", "slide"):
            values = self.frame[col]
            if (values != "").all() and values.nunique() > 1:
                return col
        return None

    def with_positive_class(self, positive_class: str | None = None) -> Manifest:
        """This manifest with the positive class second (binary tasks; see histoflow.data.classes).

        A ConfigError when the two class names do not say which is positive and `positive_class`
        is not given."""
        from histoflow.data.classes import positive_class_order

        names = positive_class_order(self.class_names, positive_class, self.source or "manifest")
        return Manifest(self.frame, names, self.format, self.source, list(self.skipped))

    def require_classes(self, minimum: int = 2) -> None:
        present = sorted(set(self.frame["label"]) - {""})
        if len(present) < minimum:
            raise DataError(
                f"{self.source or 'manifest'}: label column has {len(present)} class(es) "
                f"{present}; a classifier needs at least {minimum}"
            )

    def to_csv(self, path: str | Path) -> Path:
        """Write `path,label,patient,slide,split,...` atomically (temp file, then rename)."""
        with atomic_path(path) as tmp:
            self.frame.to_csv(tmp, index=False)
        return Path(path)


def class_order(labels) -> list[str]:
    """A stable class order: numeric names numerically ("2" < "10"), others alphabetically.

    For binary data the second class is the positive one: "1" for 0/1 labels, "malignant" for
    benign/malignant, "tumor" for normal/tumor. Names that sort the other way round
    (metastasis/normal) are put right by `Manifest.with_positive_class`, which training calls.
    """
    names = sorted({str(x) for x in labels} - {""})
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return names


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in frame.columns:
            frame[col] = -1 if col == "item" else ""
    frame["item"] = frame["item"].astype(np.int64)
    for col in ("height", "width"):  # a run's splits.csv has them; read back as a CSV they are text
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").fillna(-1).astype(np.int64)
    for col in ("label", "patient", "slide", "split"):
        frame[col] = frame[col].fillna("").astype(str)
    return frame


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    paths = sorted(p for p in folder.glob(pattern) if p.is_file() and is_image_file(p))
    for p in paths:
        _require_text_name(p)
    return paths


def _require_text_name(path: Path) -> None:
    """A name that is not valid in the file system's encoding (a Latin-1 'café.png' copied onto a
    UTF-8 system) cannot go into a manifest table or a CSV: say which file and how to fix it."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")  # 'caf\xe9.png': the bytes on disk
        raise DataError(
            f"{shown}: file name is not valid UTF-8 (written by a system with another encoding, "
            f"e.g. Latin-1); rename it, e.g. `convmv -f latin1 -t utf8 -r --notest FOLDER`"
        ) from None


def _breakhis_fields(name: str) -> dict:
    match = BREAKHIS_NAME.match(name)
    if not match:
        return {}
    return {"slide": match["slide"], "patient": match["slide"], "subtype": match["subtype"].upper()}


# --- readers, one per layout -------------------------------------------------------------------


def read_class_folders(root: Path, **_) -> Manifest:
    """`<root>/<class>/*.png` or `<root>/<split>/<class>/*.png` (PCam-as-images, BreakHis, CRC)."""
    rows = []
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    if split_dirs:
        layout = [(SPLIT_ALIASES[d.name.lower()], c) for d in split_dirs for c in sorted(d.iterdir()) if c.is_dir()]
    else:
        layout = [("", d) for d in subdirs]
    for split, class_dir in layout:
        images = _images_in(class_dir, recursive=True)
        if not images:  # said, not silently dropped: an empty class may be a copy that went wrong
            log.warning(
                "%s: class folder holds no images; %r is not a class of this dataset", class_dir, class_dir.name
            )
        for path in images:
            row = {"path": str(path), "label": class_dir.name, "split": split}
            row.update(_breakhis_fields(path.name))
            rows.append(row)
    if not rows:
        raise DataError(
            f"{root}: no images found in class folders (looked for {', '.join(sorted({'.png', '.jpg', '.tif'}))} ...)"
        )
    frame = _frame(rows)
    return Manifest(frame, class_order(frame["label"]), "class_folders", str(root))


def read_idc(root: Path, **_) -> Manifest:
    """IDC: `<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png`; root may be one patient folder."""
    rows = []
    for path in _images_in(root, recursive=True):
        match = IDC_NAME.match(path.name)
        if not match:
            continue
        if path.parent.name.isdigit() and path.parent.name != match["cls"]:
            raise DataError(f"{path}: folder says class {path.parent.name} but the file name says class{match['cls']}")
        rows.append(
            {
                "path": str(path),
                "label": match["cls"],
                "patient": match["patient"],
                "x": int(match["x"]),
                "y": int(match["y"]),
            }
        )
    if not rows:
        raise DataError(f"{root}: no IDC patches named <patient>_idx5_x<X>_y<Y>_class<C>.png found")
    frame = _frame(rows)
    return Manifest(frame, class_order(frame["label"]), "idc", str(root))


def read_kaggle(root: Path, labels_csv: str = "train_labels.csv", image_dir: str = "train", **_) -> Manifest:
    """Kaggle Histopathologic Cancer Detection: `train_labels.csv` (id,label) + `train/<id>.tif`."""
    csv_path = root / labels_csv if root.is_dir() else root
    base = csv_path.parent
    table = _read_csv(csv_path)
    for col in ("id", "label"):
        if col not in table.columns:
            raise DataError(f"{csv_path}: expected columns 'id,label', found {list(table.columns)}")
    folder = base / image_dir
    rows = [
        {"path": str(folder / f"{i}.tif"), "label": str(lbl)} for i, lbl in zip(table["id"].astype(str), table["label"])
    ]
    frame = _frame(rows)
    return Manifest(frame, class_order(frame["label"]), "kaggle", str(csv_path))


def read_pcam_h5(root: Path, **_) -> Manifest:
    """PCam HDF5: `camelyonpatch_level_2_split_<split>_{x,y}.h5`, read lazily (no pixels loaded)."""
    import h5py

    x_files = [root] if root.is_file() else sorted(root.glob("camelyonpatch_level_2_split_*_x.h5"))
    rows: list[dict[str, object]] = []
    for x_file in x_files:
        match = PCAM_H5.search(x_file.name)
        if not match:
            raise DataError(f"{x_file}: not a PCam file name (camelyonpatch_level_2_split_<split>_x.h5)")
        y_file = x_file.with_name(x_file.name.replace("_x.h5", "_y.h5"))
        try:
            with h5py.File(x_file, "r") as fx:
                n = fx["x"].shape[0]
            labels = [""] * n
            if y_file.exists():
                with h5py.File(y_file, "r") as fy:
                    labels = [str(int(v)) for v in np.asarray(fy["y"]).reshape(-1)]
                if len(labels) != n:
                    raise DataError(f"{y_file}: {len(labels)} labels for {n} images in {x_file.name}")
        except (OSError, KeyError) as exc:
            raise DataError(f"{x_file}: cannot read PCam HDF5 ({exc})") from exc
        split = SPLIT_ALIASES.get(match["split"], match["split"])
        rows.extend({"path": str(x_file), "item": i, "label": lbl, "split": split} for i, lbl in enumerate(labels))
    if not rows:
        raise DataError(f"{root}: no camelyonpatch_level_2_split_*_x.h5 files found")
    frame = _frame(rows)
    return Manifest(frame, class_order(frame["label"]), "pcam_h5", str(root))


def read_csv_manifest(csv_path: Path, label_column: str = "label", path_column: str = "path", **_) -> Manifest:
    """A CSV `path,label[,patient,slide,split]`; relative paths are relative to the CSV."""
    table = _read_csv(csv_path)
    missing = [c for c in (path_column, label_column) if c not in table.columns]
    if missing:
        raise DataError(
            f"{csv_path}: missing column(s) {missing}; found {list(table.columns)} "
            f"(set label_column / path_column to the right names)"
        )
    table = table.rename(columns={path_column: "path", label_column: "label"})
    base = csv_path.parent
    table["path"] = [str(p if Path(p).is_absolute() else (base / p)) for p in table["path"].astype(str)]
    table["label"] = table["label"].fillna("").astype(str).str.replace(r"\.0$", "", regex=True)
    blank = table.index[table["label"].str.strip() == ""]
    if 0 < len(blank) < len(table):  # some rows labelled, some not: a gap in the table, not unlabelled data
        lines = ", ".join(str(i + 2) for i in blank[:10]) + (" ..." if len(blank) > 10 else "")
        raise DataError(
            f"{csv_path}: {len(blank)} of {len(table)} rows have an empty {label_column!r} (CSV lines {lines}); "
            f"fill or remove them (a column that is empty in every row means unlabelled images)"
        )
    if "split" in table.columns:
        table["split"] = [
            SPLIT_ALIASES.get(str(s).lower(), str(s)) if isinstance(s, str) else "" for s in table["split"]
        ]
    frame = _frame(table.to_dict("records"))
    return Manifest(frame, class_order(frame["label"]), "csv", str(csv_path))


def read_image_folder(root: Path, label_pattern: str | None = None, **_) -> Manifest:
    """A flat folder of images: unlabelled, or labelled by a regex on the file name.

    `label_pattern` has one group, e.g. `^([A-Z]+)-` for NCT-CRC tiles named `TUM-AACHEHDV.tif`.
    """
    paths = _images_in(root)
    if not paths:
        raise DataError(f"{root}: no images found")
    rows = []
    for path in paths:
        label = ""
        if label_pattern:
            match = re.search(label_pattern, path.name)
            if not match:
                raise DataError(f"{path}: file name does not match label_pattern {label_pattern!r}")
            label = match.group(1)
        rows.append({"path": str(path), "label": label})
    frame = _frame(rows)
    return Manifest(frame, class_order(frame["label"]), "images", str(root))


READERS: dict[str, Callable[..., Manifest]] = {
    "class_folders": read_class_folders,
    "idc": read_idc,
    "kaggle": read_kaggle,
    "pcam_h5": read_pcam_h5,
    "csv": read_csv_manifest,
    "images": read_image_folder,
}


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc


def detect_format(path: Path) -> str:
    """Name the layout of `path`, or raise DataError listing what was seen."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            header = _read_csv(path).columns
            if "id" in header and "path" not in header and (path.parent / "train").is_dir():
                return "kaggle"
            return "csv"
        if PCAM_H5.search(path.name):
            return "pcam_h5"
        raise DataError(f"{path}: a file, but neither a CSV manifest nor a PCam HDF5 file")
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise DataError(f"{path}: folder is empty")
    if any(PCAM_H5.search(p.name) for p in entries):
        return "pcam_h5"
    if (path / "train_labels.csv").is_file() and (path / "train").is_dir():
        return "kaggle"
    images = [p for p in entries if p.is_file() and is_image_file(p)]
    subdirs = [p for p in entries if p.is_dir()]
    if images and subdirs:
        raise DataError(
            f"{path}: ambiguous layout: {len(images)} images at the top level and {len(subdirs)} "
            f"sub-folders ({', '.join(sorted(d.name for d in subdirs)[:5])}); pass format= explicitly"
        )
    if images:
        return "images"
    if subdirs:
        sample = next((p for d in sorted(subdirs)[:3] for p in d.rglob("*") if p.is_file() and is_image_file(p)), None)
        if sample is not None and IDC_NAME.match(sample.name):
            return "idc"
        if sample is not None:
            return "class_folders"
    seen = ", ".join(sorted(p.name for p in entries)[:8])
    raise DataError(
        f"{path}: cannot tell the dataset layout; saw: {seen}. Expected class folders, "
        f"IDC, Kaggle (train_labels.csv + train/), PCam HDF5, a CSV, or a folder of images"
    )


def read_manifest(path: str | Path, format: str = "auto", **options) -> Manifest:
    """Read any supported patch layout into a Manifest; says which format it chose."""
    from histoflow.core.paths import expand

    path = expand(path)
    if format == "auto":
        format = detect_format(path)
        log.info("%s: detected format %r", path, format)
    if format not in READERS:
        from difflib import get_close_matches

        close = get_close_matches(format, READERS, n=3)
        raise DataError(
            f"unknown manifest format {format!r}; known: {sorted(READERS)}"
            + (f" (did you mean {close}?)" if close else "")
        )
    if format == "csv" and path.is_dir():
        raise DataError(f"{path}: format 'csv' needs a CSV file, got a folder")
    manifest = READERS[format](path, **options)
    manifest.format = format
    if not len(manifest):
        raise DataError(f"{path}: no images found")
    return manifest
