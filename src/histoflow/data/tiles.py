"""Tile shards plus a slide label CSV as a Manifest: training data made of whole slides.

`histoflow tile` writes OUT/manifest.parquet (one row per kept tile: tile_id, slide_id, x, y,
size_px0, mpp, tile_px, shard, row) and OUT/slides/<slide_id>/report.json per slide (see
histoflow.tiling.shards: that layout is the contract read here). The label CSV is

    slide,label[,patient][,split]                    a label per slide
    slide,x,y,width,height,label[,patient][,split]   region labels in level-0 pixels: a tile
                                                     takes the label of the region holding its
                                                     centre; rows without x..height label slides

Each tile becomes one Manifest row: `path` is its shard file and `item` its row there (read by
histoflow.data.shard_rows, as PCam's HDF5 rows are), `label` its slide's (or region's) label,
`patient` the CSV's patient (else the slide), `split` the CSV's split when given. Everything
that works on patch Manifests (grouped splits, subsampling, normalisation statistics, the
datasets, every augmentation and stain option) then works on tiles unchanged.

What does not fit is said, never dropped silently: labelled slides that were never tiled are
one error listing them; tiled slides without a label and slides with no kept tile are left
out and counted in `TileCohort.notes`; slides tiled at different mpp or tile sizes are refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.core.errors import DataError
from histoflow.data.manifest import SPLIT_ALIASES, Manifest, class_order
from histoflow.slide.base import slide_id_of

log = logging.getLogger(__name__)
REGION_COLUMNS = ("x", "y", "width", "height")
LISTED = 10  # slide ids named in one message


@dataclass
class TileCohort:
    """The tile Manifest plus what the cohort is: resolution, and the slides left out and why."""

    manifest: Manifest
    tiles_dir: Path
    mpp: float | None
    tile_px: int
    slides: list[str]  # slides with labelled tiles
    excluded: dict[str, list[str]] = field(default_factory=dict)  # why -> slide ids
    notes: list[str] = field(default_factory=list)
    # the resampling its tiles' pixels came from (tiling.read.PIXELS_VERSION; 1 for reports written
    # before it was recorded, None without reports); the checkpoint keeps it for predict-slide
    pixels_version: int | None = None


def _listed(ids) -> str:
    ids = sorted(ids)
    more = f" and {len(ids) - LISTED} more" if len(ids) > LISTED else ""
    return ", ".join(ids[:LISTED]) + more


def read_slide_labels(path: str | Path) -> pd.DataFrame:
    """The label CSV as a frame: slide, label, patient, split, and x,y,width,height (NaN for slide rows)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label CSV not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - pandas raises several kinds for a bad CSV
        raise DataError(f"{path}: cannot read label CSV ({exc})") from exc
    missing = {"slide", "label"} - set(frame.columns)
    if missing:
        raise DataError(
            f"{path}: label CSV needs columns slide,label; missing {sorted(missing)} (has {list(frame.columns)})"
        )
    frame = frame.apply(lambda col: col.str.strip())
    empty = frame.index[(frame["slide"] == "") | (frame["label"] == "")]
    if len(empty):
        lines = ", ".join(str(i + 2) for i in empty[:LISTED])
        raise DataError(f"{path}: {len(empty)} row(s) with an empty slide or label (lines {lines})")
    for col in ("patient", "split"):
        if col not in frame.columns:
            frame[col] = ""
    bad_split = sorted({s for s in frame["split"] if s and s.lower() not in SPLIT_ALIASES})
    if bad_split:
        raise DataError(f"{path}: unknown split name(s) {bad_split}; use train, val or test")
    frame["split"] = frame["split"].map(lambda s: SPLIT_ALIASES.get(s.lower(), ""))
    given = frame.groupby("slide")["split"].agg(lambda s: (s != "").any())
    if given.any() and not given.all():  # those slides would be in no split: trained on by nobody
        missing = given.index[~given]
        raise DataError(
            f"{path}: {len(missing)} slide(s) without a split while the others have one: {_listed(missing)}; "
            f"give every slide a split, or leave the split column empty to have one made"
        )
    has_regions = set(REGION_COLUMNS) <= set(frame.columns)
    for col in REGION_COLUMNS:
        if has_regions:
            values = pd.to_numeric(frame[col].replace("", np.nan), errors="coerce")
            bad = frame.index[values.isna() & (frame[col] != "")]
            if len(bad):
                raise DataError(f"{path}:{bad[0] + 2}: {col} must be a number, got {frame.at[bad[0], col]!r}")
            frame[col] = values
        else:
            frame[col] = np.nan
    slide_rows = frame[frame["x"].isna()]
    twice = slide_rows.groupby("slide")["label"].nunique()
    if (twice > 1).any():
        raise DataError(f"{path}: slide(s) with two labels: {_listed(twice.index[twice > 1])}")
    for col in ("patient", "split"):
        many = frame.groupby("slide")[col].nunique()
        if (many > 1).any():
            raise DataError(f"{path}: slide(s) with two values of {col!r}: {_listed(many.index[many > 1])}")
    return frame


def _tiled_slides(tiles_dir: Path) -> dict[str, dict]:
    """slide id -> report.json of every slide the tiling run finished (complete or failed)."""
    reports = {}
    for report in sorted((tiles_dir / "slides").glob("*/report.json")):
        try:
            reports[report.parent.name] = json.loads(report.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{report}: unreadable tiling report ({exc})") from exc
    return reports


def read_tile_cohort(tiles_dir: str | Path, labels: str | Path, class_names: list[str] | None = None) -> TileCohort:
    """The labelled tiles of a `histoflow tile` output folder (see the module docstring)."""
    import pyarrow.parquet as pq

    tiles_dir = Path(tiles_dir)
    manifest_path = tiles_dir / "manifest.parquet"
    if not manifest_path.is_file():
        raise DataError(f"{tiles_dir}: not a tiling output (no manifest.parquet); run `histoflow tile` first")
    table = pq.read_table(manifest_path).to_pandas()
    label_frame = read_slide_labels(labels)
    reports = _tiled_slides(tiles_dir)
    tiled = set(reports) | set(table["slide_id"])

    # a CSV may name slides by file name ("a.svs") where the tiles use ids ("a")
    label_frame["slide"] = [s if s in tiled else slide_id_of(s) for s in label_frame["slide"]]
    labelled = set(label_frame["slide"])
    never_tiled = labelled - tiled
    if never_tiled:
        raise DataError(
            f"{labels}: {len(never_tiled)} labelled slide(s) were never tiled in {tiles_dir}: {_listed(never_tiled)} "
            f"(tile them, or remove them from the CSV)"
        )
    failed = {sid for sid, r in reports.items() if r.get("status") not in (None, "complete")}
    has_tiles = set(table["slide_id"])
    excluded = {
        "no label": sorted(tiled - labelled),
        "tiling failed": sorted(failed & labelled),
        "no tiles": sorted((labelled - has_tiles) - failed),
    }
    notes = [f"{len(ids)} slide(s) left out ({why}): {_listed(ids)}" for why, ids in excluded.items() if ids]
    for note in notes:
        log.warning("%s: %s", tiles_dir, note)

    table = table[table["slide_id"].isin(labelled - failed)].reset_index(drop=True)
    mixed = table.groupby(["mpp", "tile_px"])["slide_id"].unique()
    if len(mixed) > 1:
        described = "; ".join(f"{mpp:g} um/px, {px} px: {_listed(ids)}" for (mpp, px), ids in mixed.items())
        raise DataError(
            f"{tiles_dir}: slides were tiled at different resolutions or tile sizes ({described}); "
            f"a model learns one: tile them again with one --mpp and --tile-px"
        )

    tile_labels = _tile_labels(table, label_frame)
    by_slide = label_frame.drop_duplicates("slide").set_index("slide")
    patient = by_slide["patient"].reindex(table["slide_id"]).to_numpy()
    frame = pd.DataFrame(
        {
            "path": [str(tiles_dir / s) for s in table["shard"]],
            "label": tile_labels,
            "patient": np.where(patient == "", table["slide_id"], patient),
            "slide": table["slide_id"],
            "split": by_slide["split"].reindex(table["slide_id"]).to_numpy(),
            "item": table["row"].astype(np.int64),
            "tile_id": table["tile_id"],
            "x": table["x"],
            "y": table["y"],
            "size_px0": table["size_px0"],
            "height": table["tile_px"],
            "width": table["tile_px"],
        }
    )
    unlabelled = frame["label"] == ""  # region-only slides: tiles outside every region
    if unlabelled.any():
        notes.append(f"{int(unlabelled.sum())} tile(s) outside every labelled region left out")
        frame = frame[~unlabelled].reset_index(drop=True)
    names = class_order(frame["label"]) if class_names is None else list(class_names)
    manifest = Manifest(frame, names, format="tiles", source=str(labels))
    if not len(manifest):
        raise DataError(f"{labels}: no labelled tiles in {tiles_dir}")
    mpp = float(table["mpp"].iloc[0]) if len(table) and table["mpp"].iloc[0] > 0 else None
    tile_px = int(table["tile_px"].iloc[0])
    slides = sorted(set(frame["slide"]))
    return TileCohort(manifest, tiles_dir, mpp, tile_px, slides, excluded, notes, _pixels_version(reports, slides))


def _pixels_version(reports: dict[str, dict], slides: list[str]) -> int | None:
    """The one resampling the cohort's tiles came from; refuses slides from different ones
    (tiling folders refuse to mix them, but folders can be merged by hand)."""
    by_version: dict[int, list[str]] = {}
    for sid in slides:
        if sid in reports:
            by_version.setdefault(int(reports[sid].get("pixels_version", 1)), []).append(sid)
    if len(by_version) > 1:
        described = "; ".join(f"version {v}: {_listed(ids)}" for v, ids in sorted(by_version.items()))
        raise DataError(
            f"slides tiled by histoflows that resample differently are mixed ({described}); tile them again together"
        )
    return next(iter(by_version), None)


def _tile_labels(table: pd.DataFrame, label_frame: pd.DataFrame) -> list[str]:
    """Each tile's label: the region holding its centre, else its slide's label, else ""."""
    slide_rows = label_frame[label_frame["x"].isna()]
    slide_label = dict(zip(slide_rows["slide"], slide_rows["label"]))
    labels = np.array([slide_label.get(s, "") for s in table["slide_id"]], dtype=object)
    regions = label_frame[label_frame["x"].notna()]
    if len(regions):
        cx = (table["x"] + table["size_px0"] / 2).to_numpy()
        cy = (table["y"] + table["size_px0"] / 2).to_numpy()
        slide_ids = table["slide_id"].to_numpy()
        for r in regions.itertuples():
            inside = (slide_ids == r.slide) & (cx >= r.x) & (cx < r.x + r.width) & (cy >= r.y) & (cy < r.y + r.height)
            labels[inside] = r.label
    return labels.tolist()
