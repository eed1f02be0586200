"""A whole-slide cohort built from real PCam tissue: pyramidal TIFF slides with known labels.

Run: `PYTHONPATH=src python scripts/make_pcam_cohort.py --out runs/cohort [--pcam DIR]`
(PCam defaults to `$HISTOFLOW_DATA/pcam`, laid out as `{train,valid}/{0,1}/*.jpg`).

Each slide is a canvas of `grid x grid` cells of 96 px at PCam's 0.972 um/px: an irregular
blob of tissue (a noisy ellipse of cells) on noisy white glass. Every tissue cell holds a
distinct real PCam patch, placed exactly on the 96 px grid from the origin: normal cells take
label-0 patches, tumour cells take label-1 patches grown as one to three contiguous regions.

Labels come from the composition, with a margin around each cut-off:
    burden = tumour cells / tissue cells, drawn per slide from one of four strata:
        none 0 (30% of slides), low 0.02-0.10, mid 0.14-0.36, high 0.44-0.80
    binary label:  1 when the slide has any tumour cell (burden > 0), else 0
    ordinal score: 1 when burden < 0.12, 2 when 0.12 <= burden <= 0.40, 3 when burden > 0.40
Strata are allocated to every split in the same proportions (stratified by score).

Splits: train and val slides use pcam/train patches, test slides use pcam/valid patches only.
PCam's train and valid come from different Camelyon slides, so test is patient-disjoint from
train/val; train and val share source slides (PCam names no patient). Each synthetic slide is
its own `patient`. Patches are deduplicated by content hash and used at most once in the
cohort; when pcam/valid is too small for the requested test slides, fewer are built (said so).

Outputs in OUT (each written atomically; a re-run with the same arguments skips complete slides
and rewrites byte-identical tables; a re-run with other arguments into OUT refuses):
    slides/<slide_id>.tif   tiled JPEG pyramidal TIFF (256 px tiles), mpp in the resolution tags
    cells/<slide_id>.json   every tissue cell: row, col, label, source patch (relative to PCam)
    labels.csv              slide,label,patient,split          (binary label 0/1)
    labels_score.csv        slide,label,patient,split          (ordinal score 1/2/3)
    regions.csv             slide,x,y,width,height,label       (each tumour cell, level-0 px, label 1)
    composition.csv         per slide: split, cells, burden, score, binary, source patches
    cohort.json             arguments, cut-offs, strata, counts, mpp, PCam source and its dedupe
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from histoflow.core.errors import DataError
from histoflow.core.io import atomic_write_json, atomic_write_text
from histoflow.core.progress import progress_bar

CELL_PX = 96
PCAM_MPP = 0.972  # PCam: Camelyon16 at 10x, 0.243 um/px x 4
TILE_PX = 256
JPEG_QUALITY = 90
GLASS_RGB = (242, 241, 244)
SCORE_CUTOFFS = (0.12, 0.40)  # score 1: burden < 0.12; 2: 0.12-0.40; 3: > 0.40
# (name, share of slides, burden range): the ranges keep a margin from the cut-offs
STRATA = (
    ("none", 0.30, (0.0, 0.0)),
    ("high", 0.70 / 3, (0.44, 0.80)),
    ("mid", 0.70 / 3, (0.14, 0.36)),
    ("low", 0.70 / 3, (0.02, 0.10)),
)  # order = tie-break order of the allocation: a 2-slide split gets none + high
MIN_TISSUE_CELLS = 20  # so the low stratum (2-10%) holds a whole number of tumour cells
MIN_GRID = 8
SCRIPT_VERSION = 1


def score_of(burden: float) -> int:
    """Ordinal tumour-burden score 1/2/3 by SCORE_CUTOFFS."""
    return 1 if burden < SCORE_CUTOFFS[0] else (2 if burden <= SCORE_CUTOFFS[1] else 3)


# -- PCam pools ----------------------------------------------------------------------------------
def index_pcam(pcam: Path) -> tuple[dict[tuple[str, str], list[str]], dict]:
    """{(source, label): [relative paths]} of distinct patches (first of each content hash, in
    sorted order, kept), and the dedupe counts."""
    pools: dict[tuple[str, str], list[str]] = {}
    seen: set[str] = set()
    stats: dict[str, dict[str, int]] = {}
    for source in ("train", "valid"):
        for label in ("0", "1"):
            folder = pcam / source / label
            files = sorted(folder.glob("*.jpg"))
            if not files:
                raise DataError(
                    f"{folder}: no PCam patches (*.jpg) found; expected PCam as {{train,valid}}/{{0,1}}/*.jpg"
                )
            kept = []
            for f in files:
                digest = hashlib.sha256(f.read_bytes()).hexdigest()
                if digest not in seen:
                    seen.add(digest)
                    kept.append(f"{source}/{label}/{f.name}")
            pools[(source, label)] = kept
            stats[f"{source}/{label}"] = {"files": len(files), "distinct": len(kept)}
    return pools, stats


# -- layout --------------------------------------------------------------------------------------
def tissue_mask(grid: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy ellipse of cells (its largest 4-connected part): the tissue of one slide."""
    import cv2

    cy, cx = grid / 2 + rng.uniform(-0.05, 0.05, 2) * grid
    ra, rb = rng.uniform(0.32, 0.45) * grid, rng.uniform(0.26, 0.40) * grid
    theta = rng.uniform(0, np.pi)
    ks = np.arange(2, 6)
    amp, phase = rng.uniform(0, 0.08, ks.size), rng.uniform(0, 2 * np.pi, ks.size)
    yy, xx = np.mgrid[0:grid, 0:grid] + 0.5
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / ra
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / rb
    phi = np.arctan2(v, u)
    edge = 1 + (amp[:, None, None] * np.cos(ks[:, None, None] * phi + phase[:, None, None])).sum(0)
    mask = (np.hypot(u, v) <= edge).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if n <= 1:
        return np.zeros((grid, grid), bool)
    return comp == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _neighbours(r: int, c: int, shape) -> list[tuple[int, int]]:
    return [
        (r + dr, c + dc)
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
        if 0 <= r + dr < shape[0] and 0 <= c + dc < shape[1]
    ]


def tumour_mask(tissue: np.ndarray, n_tumour: int, rng: np.random.Generator) -> np.ndarray:
    """`n_tumour` tissue cells grown as one to three compact contiguous regions."""
    tumour = np.zeros_like(tissue)
    if n_tumour == 0:
        return tumour
    k = 1 if n_tumour < 6 else int(rng.integers(1, 4))
    sizes = 1 + rng.multinomial(n_tumour - k, rng.dirichlet(np.full(k, 2.0)))
    for size in sizes:
        free = np.argwhere(tissue & ~tumour)
        # a new region starts away from the others (so regions stay apart) where there is room
        apart = [tuple(p) for p in free if not any(tumour[q] for q in _neighbours(*p, tissue.shape))]
        candidates = apart or [tuple(p) for p in free]
        blob = [candidates[int(rng.integers(len(candidates)))]]
        tumour[blob[0]] = True
        while len(blob) < size:
            frontier = _frontier(blob, tissue, tumour)
            if not frontier:  # enclosed: grow any region instead, so there are never more than k
                frontier = _frontier([tuple(p) for p in np.argwhere(tumour)], tissue, tumour)
            # prefer cells touching more tumour: compact regions with a ragged edge
            score = [sum(tumour[q2] for q2 in _neighbours(*q, tissue.shape)) + rng.uniform(0, 1.5) for q in frontier]
            q = frontier[int(np.argmax(score))]
            tumour[q] = True
            blob.append(q)
    return tumour


def _frontier(cells, tissue: np.ndarray, tumour: np.ndarray) -> list[tuple[int, int]]:
    return sorted({q for p in cells for q in _neighbours(*p, tissue.shape) if tissue[q] and not tumour[q]})


def allocate_strata(n: int) -> list[str]:
    """Stratum names for n slides: the STRATA shares by largest remainder (ties in STRATA order)."""
    shares = np.array([s[1] for s in STRATA]) * n
    counts = np.floor(shares).astype(int)
    rest = shares - counts
    for i in sorted(range(len(STRATA)), key=lambda i: (-round(rest[i], 9), i))[: n - counts.sum()]:
        counts[i] += 1
    return [s[0] for s, c in zip(STRATA, counts) for _ in range(c)]


def plan_split(split: str, source: str, code: int, n: int, grid: int, seed: int) -> list[dict]:
    """Layouts of the n slides of one split (which cells are tissue / tumour), seeded per slide."""
    strata = allocate_strata(n)
    np.random.default_rng([seed, code, 0]).shuffle(strata)  # ids say nothing about labels
    ranges = {s[0]: s[2] for s in STRATA}
    plans = []
    for i, stratum in enumerate(strata, start=1):
        rng = np.random.default_rng([seed, code, i])
        for _ in range(20):  # a small grid can draw a too-small blob: draw again (same seeded stream)
            tissue = tissue_mask(grid, rng)
            n_tissue = int(tissue.sum())
            if n_tissue >= MIN_TISSUE_CELLS:
                break
        else:
            raise DataError(
                f"grid {grid}: slide {split} {i} has {n_tissue} tissue cells (< {MIN_TISSUE_CELLS}); use a larger --grid"
            )
        lo, hi = ranges[stratum]
        n_tumour = 0
        if hi > 0:
            lo_n, hi_n = int(np.ceil(lo * n_tissue)), int(np.floor(hi * n_tissue))
            if lo_n > hi_n or lo_n == 0:
                raise DataError(
                    f"grid {grid}: {n_tissue} tissue cells cannot hold a burden in {lo}-{hi}; use a larger --grid"
                )
            n_tumour = int(np.clip(round(rng.uniform(lo, hi) * n_tissue), lo_n, hi_n))
        tumour = tumour_mask(tissue, n_tumour, rng)
        burden = n_tumour / n_tissue
        plans.append(
            {
                "slide": f"pcam-{split}-{i:03d}",
                "split": split,
                "source": source,
                "stratum": stratum,
                "tissue": tissue,
                "tumour": tumour,
                "burden": burden,
                "score": score_of(burden),
                "binary": int(n_tumour > 0),
                "noise_seed": [seed, code, i, 1],
            }
        )
    return plans


def demand(plans: list[dict]) -> Counter:
    need: Counter = Counter()
    for p in plans:
        n_tumour = int(p["tumour"].sum())
        need[(p["source"], "1")] += n_tumour
        need[(p["source"], "0")] += int(p["tissue"].sum()) - n_tumour
    return need


def plan_cohort(pools, n_train: int, n_val: int, n_test: int, grid: int, seed: int) -> tuple[list[dict], list[str]]:
    """All slide layouts with their patches; fewer test slides when pcam/valid is too small."""
    notes = []
    plans = plan_split("train", "train", 1, n_train, grid, seed) + plan_split("val", "train", 2, n_val, grid, seed)
    need = demand(plans)
    for key in (("train", "0"), ("train", "1")):
        if need[key] > len(pools[key]):
            raise DataError(
                f"pcam/{key[0]}/{key[1]}: {len(pools[key])} distinct patches, but {n_train} train + {n_val} val slides "
                f"of grid {grid} need {need[key]}; ask for fewer slides or a smaller --grid"
            )
    n, first_short = n_test, {}
    while True:
        test = plan_split("test", "valid", 3, n, grid, seed)
        short = {k: (v, len(pools[k])) for k, v in demand(test).items() if v > len(pools[k])}
        if not short:
            break
        first_short = first_short or short
        n -= 1
    if n < n_test:
        detail = "; ".join(
            f"pcam/{k[0]}/{k[1]} has {have} distinct patches, {need} needed" for k, (need, have) in first_short.items()
        )
        notes.append(
            f"pcam/valid is too small for {n_test} test slides of grid {grid} ({detail}): building {n} test slides"
        )
    plans += test
    # patches: each pool shuffled once (seeded), handed out in slide order, row-major cells
    order = {
        k: [v[i] for i in np.random.default_rng([seed, 9, j]).permutation(len(v))]
        for j, (k, v) in enumerate(sorted(pools.items()))
    }
    nxt = Counter()
    for p in plans:
        cells = []
        for r, c in np.argwhere(p["tissue"]):
            label = "1" if p["tumour"][r, c] else "0"
            key = (p["source"], label)
            cells.append([int(r), int(c), int(label), order[key][nxt[key]]])
            nxt[key] += 1
        p["cells"] = cells
    return plans, notes


# -- pixels and files ------------------------------------------------------------------------------
def render(plan: dict, pcam: Path, grid: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(plan["noise_seed"])
    side = grid * CELL_PX
    noise = rng.integers(-3, 4, (side, side, 1), dtype=np.int16)  # slight grey noise on the glass
    img = np.clip(np.array(GLASS_RGB, np.int16) + noise, 0, 255).astype(np.uint8)
    for r, c, _label, rel in plan["cells"]:
        bgr = cv2.imread(str(pcam / rel), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape != (CELL_PX, CELL_PX, 3):
            raise DataError(f"{pcam / rel}: not a readable {CELL_PX}x{CELL_PX} RGB patch")
        img[r * CELL_PX : (r + 1) * CELL_PX, c * CELL_PX : (c + 1) * CELL_PX] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return img


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _complete(tif: Path, sidecar: Path, cells: list) -> bool:
    """A slide is complete when its sidecar (written after the TIFF) matches the plan and the TIFF's hash."""
    if not (tif.exists() and sidecar.exists()):
        return False
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("cells") == cells and meta.get("tif_sha256") == _sha256(tif)


def write_slide(plan: dict, pcam: Path, out: Path, grid: int, mpp: float) -> bool:
    """Write one slide and its cell sidecar; False when both are already there and complete."""
    from histoflow.slide.montage import write_pyramid_tiff

    tif, sidecar = out / "slides" / f"{plan['slide']}.tif", out / "cells" / f"{plan['slide']}.json"
    if _complete(tif, sidecar, plan["cells"]):
        return False
    write_pyramid_tiff(tif, render(plan, pcam, grid), mpp, tile_px=TILE_PX, min_level_px=TILE_PX, quality=JPEG_QUALITY)
    meta = {
        "slide": plan["slide"],
        "split": plan["split"],
        "grid": grid,
        "cell_px": CELL_PX,
        "mpp": mpp,
        "tif_sha256": _sha256(tif),
        "cells": plan["cells"],  # [row, col, label, source patch relative to the PCam folder]
    }
    atomic_write_json(sidecar, meta, indent=None)
    return True


def _csv(rows: list[list], header: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _regions(tumour: np.ndarray) -> int:
    import cv2

    return cv2.connectedComponents(tumour.astype(np.uint8), connectivity=4)[0] - 1


def write_tables(plans: list[dict], out: Path) -> None:
    ids = [(p["slide"], p["slide"], p["split"]) for p in plans]  # each slide is its own patient
    atomic_write_text(
        out / "labels.csv",
        _csv([[s, p["binary"], pt, sp] for (s, pt, sp), p in zip(ids, plans)], ["slide", "label", "patient", "split"]),
    )
    atomic_write_text(
        out / "labels_score.csv",
        _csv([[s, p["score"], pt, sp] for (s, pt, sp), p in zip(ids, plans)], ["slide", "label", "patient", "split"]),
    )
    regions = [
        [p["slide"], c * CELL_PX, r * CELL_PX, CELL_PX, CELL_PX, 1]
        for p in plans
        for r, c, label, _ in p["cells"]
        if label == 1
    ]
    atomic_write_text(out / "regions.csv", _csv(regions, ["slide", "x", "y", "width", "height", "label"]))
    comp = [
        [
            p["slide"],
            p["split"],
            p["slide"],
            f"pcam/{p['source']}",
            len(p["cells"]),
            int(p["tumour"].sum()),
            f"{p['burden']:.4f}",
            p["score"],
            p["binary"],
            _regions(p["tumour"]),
            len({c[3] for c in p["cells"]}),
        ]
        for p in plans
    ]
    header = [
        "slide",
        "split",
        "patient",
        "source",
        "n_tissue_cells",
        "n_tumour_cells",
        "burden",
        "score",
        "binary",
        "n_tumour_regions",
        "n_source_patches",
    ]
    atomic_write_text(out / "composition.csv", _csv(comp, header))


def summary(plans: list[dict]) -> dict:
    """{split: {"slides", "binary_0", "binary_1", "score_1", "score_2", "score_3"}}."""
    table: dict[str, dict[str, int]] = {}
    for p in plans:
        row = table.setdefault(
            p["split"], {"slides": 0, "binary_0": 0, "binary_1": 0, "score_1": 0, "score_2": 0, "score_3": 0}
        )
        row["slides"] += 1
        row[f"binary_{p['binary']}"] += 1
        row[f"score_{p['score']}"] += 1
    return table


def format_summary(table: dict) -> str:
    cols = ["slides", "binary_0", "binary_1", "score_1", "score_2", "score_3"]
    lines = [f"{'split':<6}" + "".join(f"{c:>10}" for c in cols)]
    for split, row in table.items():
        lines.append(f"{split:<6}" + "".join(f"{row[c]:>10}" for c in cols))
    total = {c: sum(r[c] for r in table.values()) for c in cols}
    lines.append(f"{'total':<6}" + "".join(f"{total[c]:>10}" for c in cols))
    return "\n".join(lines)


# -- the cohort ------------------------------------------------------------------------------------
def build_cohort(
    pcam: Path,
    out: Path,
    n_train: int = 32,
    n_val: int = 10,
    n_test: int = 18,
    grid: int = 15,
    seed: int = 0,
    mpp: float = PCAM_MPP,
    min_slides: int = 40,
    quiet: bool = False,
) -> dict:
    """Build (or finish) the cohort in `out`; returns the cohort record also written to cohort.json."""
    pcam, out = Path(pcam).resolve(), Path(out)
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test == 0:
        raise DataError(f"slide counts must be >= 0 and not all 0 (got train {n_train}, val {n_val}, test {n_test})")
    if grid < MIN_GRID:
        raise DataError(
            f"--grid {grid}: a slide needs at least {MIN_GRID} x {MIN_GRID} cells (room for {MIN_TISSUE_CELLS} tissue cells)"
        )
    if not pcam.is_dir():
        raise DataError(f"{pcam}: PCam folder not found (expected {{train,valid}}/{{0,1}}/*.jpg)")
    args = {
        "pcam": str(pcam),
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "grid": grid,
        "seed": seed,
        "mpp": mpp,
    }
    record_path = out / "cohort.json"
    if record_path.exists():
        try:
            before = json.loads(record_path.read_text()).get("args")
        except ValueError as exc:
            raise DataError(f"{record_path}: unreadable ({exc}); delete {out} or choose another --out") from exc
        if before != args:
            diff = {
                k: (before.get(k) if before else None, v) for k, v in args.items() if not before or before.get(k) != v
            }
            raise DataError(
                f"{out}: already holds a cohort built with other arguments {diff} (was, now); choose another --out or delete it"
            )
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: not empty and holds no cohort.json; choose an empty or new --out")
    else:  # the arguments first, so an interrupted build resumes only with the same ones
        atomic_write_json(record_path, {"args": args, "complete": False})

    pools, dedupe = index_pcam(pcam)
    plans, notes = plan_cohort(pools, n_train, n_val, n_test, grid, seed)
    if not quiet:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    if len(plans) < min_slides:
        raise DataError(
            f"the cohort has {len(plans)} slides, fewer than the {min_slides} asked for (--min-slides)"
            + "".join(f"; {note}" for note in notes)
        )
    written = 0
    with progress_bar(len(plans), "slides", quiet=quiet) as bar:
        for p in plans:
            written += write_slide(p, pcam, out, grid, mpp)
            bar.advance()
    write_tables(plans, out)
    table = summary(plans)
    record = {
        "args": args,
        "complete": True,
        "script_version": SCRIPT_VERSION,
        "source": {
            "dataset": "PatchCamelyon (PCam), 96x96 H&E patches of Camelyon16 lymph node sections, 10x",
            "path": str(pcam),
            "train_val_from": "pcam/train",
            "test_from": "pcam/valid",
            "dedupe": dedupe,
        },
        "mpp": mpp,
        "cell_px": CELL_PX,
        "tile_px": TILE_PX,
        "slide_px": grid * CELL_PX,
        "jpeg_quality": JPEG_QUALITY,
        "binary_label": "1 when the slide has any tumour cell (burden > 0), else 0",
        "score_cutoffs": {
            "1": f"burden < {SCORE_CUTOFFS[0]}",
            "2": f"{SCORE_CUTOFFS[0]} <= burden <= {SCORE_CUTOFFS[1]}",
            "3": f"burden > {SCORE_CUTOFFS[1]}",
        },
        "strata": {name: {"share": round(share, 4), "burden": list(rng)} for name, share, rng in STRATA},
        "notes": notes,
        "counts": table,
        "patches_used": sum(len(p["cells"]) for p in plans),
    }
    atomic_write_json(record_path, record)
    record["written"] = written
    return record


def main(argv: list[str] | None = None) -> int:
    data = Path(os.environ.get("HISTOFLOW_DATA", "/work/shared/data"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="cohort folder (created)")
    ap.add_argument(
        "--pcam", type=Path, default=data / "pcam", help="PCam folder {train,valid}/{0,1}/*.jpg (default: %(default)s)"
    )
    ap.add_argument("--n-train", type=int, default=32, help="train slides, from pcam/train (default: %(default)s)")
    ap.add_argument("--n-val", type=int, default=10, help="val slides, from pcam/train (default: %(default)s)")
    ap.add_argument("--n-test", type=int, default=18, help="test slides, from pcam/valid (default: %(default)s)")
    ap.add_argument("--grid", type=int, default=15, help="cells of 96 px per slide side (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--min-slides", type=int, default=40, help="refuse a cohort smaller than this (default: %(default)s)"
    )
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        record = build_cohort(
            args.pcam,
            args.out,
            args.n_train,
            args.n_val,
            args.n_test,
            args.grid,
            args.seed,
            min_slides=args.min_slides,
            quiet=args.quiet,
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(format_summary(record["counts"]))
        print(
            f"{sum(r['slides'] for r in record['counts'].values())} slides ({record['written']} written) of "
            f"{record['slide_px']} px at {record['mpp']} um/px in {args.out} ({time.perf_counter() - t0:.1f} s); "
            f"score cut-offs: burden < {SCORE_CUTOFFS[0]} -> 1, <= {SCORE_CUTOFFS[1]} -> 2, else 3"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
