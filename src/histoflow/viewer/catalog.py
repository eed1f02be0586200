"""What `histoflow view PATH...` shows: slides, and histoflow outputs found beside or inside the paths.

A PATH is a slide file, a folder of slides, an output folder, or an overlay file:

    predict-slide    OUT/<slide_id>/slide.json with "grid": probability heatmaps (probabilities.npy),
                     MIL attention (tiles.parquet "attention"), regions/tiles GeoJSON, the tile grid
    detect-mitoses   OUT/<slide_id>/slide.json with "mitoses": detections (GeoJSON points or
                     detections.csv), the hotspot square; OUT/detections.csv (image|slide, x, y, score)
    tile             OUT/slides/<slide_id>/report.json: tissue mask (mask.png), tile grid (manifest.parquet)
    study            the above in heatmaps/ and tiles/
    folders          slide files in the folder itself; whole-slide formats (not PNG/JPEG) further down
    *.geojson        regions or points for the slide named like the file (or its folder)

Outputs name their slide (slide.json "slide"/"path", report.json "path"), so a folder of outputs
alone brings its slides; a slide given on the command line takes the outputs whose slide id is
its own. Nothing here opens a slide or reads an overlay: that happens when the page asks (app.py),
so a bad file costs its own entry, never the list.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from histoflow.slide.base import slide_id_of
from histoflow.slide.files import SLIDE_SUFFIXES, expand_slides

log = logging.getLogger(__name__)
MAX_DEPTH = 4  # a study folder holds outputs two levels down; deeper trees are someone's archive
WSI_SUFFIXES = tuple(s for s in SLIDE_SUFFIXES if s not in (".png", ".jpg", ".jpeg"))
SKIP_DIRS = {"shards", "checkpoints", "tb", "__pycache__", "mlruns", "report"}


@dataclass
class Overlay:
    id: str
    kind: str  # grid | mask | geojson | detections | tile_grid | box
    name: str
    run: str  # the output folder it came from, as the page labels it
    path: Path
    params: dict = field(default_factory=dict)
    error: str | None = None  # known before reading (a file the output should have is missing)


@dataclass
class SlideEntry:
    id: str
    path: Path | None
    error: str | None = None
    overlays: list[Overlay] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)

    def add(self, kind: str, name: str, run: str, path: Path, must_exist: bool = True, **params) -> Overlay:
        ov = Overlay(f"o{len(self.overlays)}", kind, name, run, Path(path), params)
        if must_exist and not ov.path.is_file():
            ov.error = f"{ov.path}: file not found"
        self.overlays.append(ov)
        return ov


@dataclass
class Catalog:
    slides: dict[str, SlideEntry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # inputs that are neither slides nor outputs

    def entry_for(self, slide_id: str, path: Path | None, named_by: str | None = None) -> SlideEntry:
        """The entry of a slide (by resolved path, else id), created if new."""
        resolved = _resolve(path)
        for e in self.slides.values():
            if resolved is not None and e.path is not None and _resolve(e.path) == resolved:
                return e
        if resolved is None or named_by is not None:
            same_id = [e for e in self.slides.values() if slide_id_of(e.path or e.id) == slide_id]
            if same_id:
                return same_id[0]
        sid, n = slide_id, 2
        while sid in self.slides:  # two slides with one name in different folders
            sid, n = f"{slide_id}~{n}", n + 1
        entry = SlideEntry(sid, path)
        if path is None:
            entry.error = f"slide {slide_id!r}: no slide file (outputs name none)"
        elif not path.exists():
            entry.error = f"{path}: slide file not found" + (f" (named by {named_by})" if named_by else "")
        self.slides[sid] = entry
        return entry


def _resolve(path: Path | None) -> Path | None:
    if path is None:
        return None
    try:
        return path.resolve()
    except OSError:
        return path


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _slide_file(value, beside: Path) -> Path | None:
    """A slide path as an output recorded it: absolute, or relative to the working directory
    the verb ran in (unknown here: tried as given, then beside the output)."""
    if not value or not isinstance(value, str) or value.startswith("<"):
        return None
    p = Path(value)
    if p.is_absolute() or p.exists():
        return p
    return beside / p if (beside / p).exists() else p


def discover(paths, catalog: Catalog | None = None) -> Catalog:
    cat = catalog or Catalog()
    given = [Path(raw) for raw in paths]
    # slides first, outputs second: an output whose recorded slide path no longer exists still
    # finds the slide given on the command line by its id
    for p in given:
        if p.is_dir():
            if not _is_output_dir(p):  # slides in the folder itself, as `histoflow tile` takes them
                for q in expand_slides([p]):  # a DICOM series folder is one slide, and so is each series in p
                    cat.entry_for(slide_id_of(q), q)
        elif p.name != "slide.json" and p.suffix.lower() not in (".geojson", ".csv"):
            if p.exists() or p.name.lower().endswith(SLIDE_SUFFIXES):
                cat.entry_for(slide_id_of(p), p)
            else:
                cat.problems.append(f"{p}: not found")
    loose: list[Path] = []  # overlay files given or found, attached once every slide is known
    for p in given:
        if p.is_dir():
            _walk(cat, p, p.parent, loose)
        elif p.name == "slide.json":
            _output_dir(cat, p.parent, p.parent.parent, loose)
        elif p.suffix.lower() in (".geojson", ".csv"):
            loose.append(p)
    for path in dict.fromkeys(loose):
        _attach_loose(cat, path)
    return cat


def _is_output_dir(d: Path) -> bool:
    return (d / "slide.json").is_file() or (d / "report.json").is_file()


def _walk(cat: Catalog, root: Path, label_root: Path, loose: list[Path]) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        depth = len(d.relative_to(root).parts)
        dirnames[:] = sorted(n for n in dirnames if n not in SKIP_DIRS and not n.startswith(".") and depth < MAX_DEPTH)
        names = set(filenames)
        if "slide.json" in names:
            _output_dir(cat, d, label_root, loose)
            dirnames[:] = []
            continue
        if d.name == "slides" and ((d.parent / "manifest.parquet").is_file() or (d.parent / "config.json").is_file()):
            _tile_run(cat, d.parent, label_root)
            dirnames[:] = []
            continue
        if depth:  # whole-slide files further down (not PNG/JPEG there: a patch folder is no slide list)
            for n in sorted(names):
                if n.lower().endswith(WSI_SUFFIXES):
                    cat.entry_for(slide_id_of(d / n), d / n)
        per_slide = any((d / n / "slide.json").is_file() for n in dirnames)
        if "detections.csv" in names and not per_slide:
            # detect-mitoses on image files: one table (and one GeoJSON) for many images
            loose.append(d / "detections.csv")
            names.discard("detections.geojson")
        elif per_slide:
            names -= {"detections.csv", "detections.geojson"}  # the per-slide folders hold the same
        loose += [d / n for n in sorted(names) if n.endswith(".geojson")]


def _run_label(run_dir: Path, label_root: Path) -> str:
    try:
        rel = run_dir.resolve().relative_to(label_root.resolve())
        return str(rel) if str(rel) != "." else run_dir.name
    except ValueError:
        return run_dir.name


def _output_dir(cat: Catalog, d: Path, label_root: Path, loose: list[Path]) -> None:
    """One slide's predict-slide or detect-mitoses output folder."""
    report = _read_json(d / "slide.json")
    run = _run_label(d.parent, label_root)
    if report is None:
        cat.problems.append(f"{d / 'slide.json'}: not a readable JSON object")
        return
    sid = str(report.get("slide_id") or d.name)
    entry = cat.entry_for(
        sid, _slide_file(report.get("slide") or report.get("path"), d), named_by=str(d / "slide.json")
    )
    if "grid" in report:
        _predict_overlays(entry, d, run, report)
    elif "mitoses" in report:
        _mitosis_overlays(entry, d, run, report)
    else:
        cat.problems.append(f"{d / 'slide.json'}: neither a predict-slide nor a detect-mitoses report")
    claimed = {"regions.geojson", "tiles.geojson", "detections.geojson"}
    loose += [q for q in sorted(d.glob("*.geojson")) if q.name not in claimed]


def _predict_overlays(entry: SlideEntry, d: Path, run: str, report: dict) -> None:
    names = [str(n) for n in report.get("class_names") or []]
    positive = str(report.get("positive_class", names[-1] if names else "1"))
    grid = report.get("grid") or {}
    score = report.get("score")
    if isinstance(score, (int, float)):
        method = str(report.get("score_method", "score"))
        label = f"{method} P({positive})" if method in ("max", "mean", "topk_mean", "fraction") else method
        entry.scores.append({"run": run, "label": label, "value": float(score)})
    if report.get("status") not in (None, "complete"):
        entry.scores.append({"run": run, "label": f"status: {report.get('status')}", "value": None})
    shown = [names.index(positive)] if len(names) == 2 and positive in names else range(len(names))
    for k in shown:
        entry.add("grid", f"P({names[k]})", run, d / "probabilities.npy", grid=grid, channel=k, vmin=0.0, vmax=1.0)
    threshold = (report.get("aggregation") or {}).get("threshold", 0.5)
    entry.add("geojson", f"regions P({positive}) >= {threshold:g}", run, d / "regions.geojson")
    entry.add("geojson", f"tiles P({positive}) >= {threshold:g}", run, d / "tiles.geojson")
    tiles = d / "tiles.parquet"
    entry.add("tile_grid", "tile grid", run, tiles, size_px0=grid.get("region_px0"), source="predict")
    if tiles.is_file() and _has_column(tiles, "attention"):
        entry.add("grid", "MIL attention / max", run, tiles, grid=grid, column="attention", vmin=0.0, vmax=1.0)


def _has_column(path: Path, name: str) -> bool:
    import pyarrow.parquet as pq

    try:
        return name in pq.read_schema(path).names
    except Exception:  # unreadable Parquet: the tile grid overlay reports it when read
        return False


def _mitosis_overlays(entry: SlideEntry, d: Path, run: str, report: dict) -> None:
    n, score = report.get("mitoses"), report.get("score")
    hot = report.get("hotspot") or {}
    label = f"mitotic score ({n} mitoses, hotspot {hot.get('count', '?')})"
    entry.scores.append({"run": run, "label": label, "value": score})
    if (d / "detections.geojson").is_file() or not (d / "detections.csv").is_file():
        entry.add("geojson", "mitoses", run, d / "detections.geojson")
    else:
        entry.add("detections", "mitoses", run, d / "detections.csv")
    if {"x0", "y0", "area_mm2"} <= set(hot):
        entry.add("box", f"hotspot ({hot.get('count', '?')} mitoses)", run, d / "slide.json", hotspot=hot)


def _tile_run(cat: Catalog, out: Path, label_root: Path) -> None:
    run = _run_label(out, label_root)
    for d in sorted((out / "slides").iterdir()):
        report = _read_json(d / "report.json") if d.is_dir() else None
        if report is None:
            continue
        entry = cat.entry_for(
            str(report.get("slide_id") or d.name), _slide_file(report.get("path"), out), named_by=str(d / "report.json")
        )
        info = report.get("slide") or {}
        mask = entry.add("mask", "tissue mask", run, d / "mask.png", downsample=info.get("mask_downsample"))
        if mask.error is None and not info.get("mask_downsample"):
            mask.error = f"{d / 'report.json'}: no mask_downsample recorded; cannot place the mask"
        grid = entry.add("tile_grid", "tile grid", run, out / "manifest.parquet", slide_id=d.name, source="tiling")
        if report.get("status") == "failed":
            mask.error = grid.error = f"tiling failed: {report.get('error')}"


def _attach_loose(cat: Catalog, path: Path) -> None:
    """A GeoJSON or detections table not inside a slide's output folder."""
    if path.name.endswith(".csv"):
        return _attach_detections(cat, path)
    target = None
    for e in cat.slides.values():
        sid = slide_id_of(e.path) if e.path else e.id
        if (
            path.stem == sid
            or path.stem.startswith(sid + ".")
            or path.stem.startswith(sid + "_")
            or path.parent.name == sid
        ):
            target = e
            break
    if target is None and len(cat.slides) == 1:
        target = next(iter(cat.slides.values()))
    if target is None:
        cat.problems.append(f"{path}: no slide named like this GeoJSON file (or its folder); not shown")
        return
    if any(o.path == path for o in target.overlays):
        return
    target.add("geojson", path.stem, path.parent.name, path)


def _attach_detections(cat: Catalog, path: Path) -> None:
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except Exception as exc:  # not a CSV at all
        cat.problems.append(f"{path}: cannot read as CSV ({exc})")
        return
    key = next((c for c in ("slide", "image", "slide_id") if c in table.columns), None)
    if key is None or not {"x", "y"} <= set(table.columns):
        cat.problems.append(f"{path}: not a detections table (needs image or slide, x, y[, score]); not shown")
        return
    for value in sorted(table[key].dropna().astype(str).unique()):
        sid = slide_id_of(value)
        entry = cat.entry_for(sid, _slide_file(value, path.parent) if key == "image" else None, named_by=str(path))
        entry.add("detections", "detections", path.parent.name, path, key=key, value=value)
