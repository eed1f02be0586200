"""Training from tile shards (data.tiles) against training from an equal patch folder, same model,
batch size and loader settings, in the same run. Target: shards give >= 0.9 of the patch-folder
training throughput (they should be the faster source: no per-file open).

Run: PYTHONPATH=src python bench/bench_tile_train.py [--slides 60] [--grid 15] [--steps 30] [--rounds 3]
Prints one JSON line: images/s of each source (median of the interleaved rounds, and every
round), the ratio shards / patch folder, and the same for data loading alone.

The data: a cohort of pyramidal TIFF slides built from real PCam patches
(scripts/make_pcam_cohort.py, in a temporary folder) and tiled at 96 px / 0.972 um/px by
`extract_tiles`. The patch folder holds the very same tiles: each tile's encoded bytes, as stored in
its shard, written to `<split>/<label>/<tile_id>.jpg` (read by read_manifest as class folders with
split folders), so both sources decode identical JPEGs and train on identical splits.

- train: `fit` (histoflow's training loop, Lightning) with the default recipe
  (configs/pcam_simple_cnn.yaml: batch 64, batch augmentation, AdamW, one-cycle) but a smaller
  simple_cnn (`--model-params`; the recipe's own trains at ~45 img/s on 2 cores, where loading is
  under 1% of a step and no source could show) and images decoded every epoch (data.cache none, as
  for a cohort too big for memory) by `--workers` loader workers; two epochs of `--steps`
  optimizer steps, the second one timed from its first batch to its last (the first warms caches
  and allocators).
- load: the training dataset of each source through `make_loader` alone (shuffled, `--workers`
  workers, the training batch size), whole passes of at least 20k images, no model.
- fill_one_thread: the dataset's batch filling (`PatchDataset._fill_rows`: read + decode into a
  reused array) on one thread, no loader: each source's own per-image cost, the figure least moved
  by other jobs on a shared machine.
On a shared 2-core machine the training figures swing up to 10x with other jobs' load (a step of
this small model takes ~80 ms alone and over 500 ms when two other jobs run): read the rounds,
and compare sources only within rounds of a similar level.
Rounds alternate the sources, so machine noise hits both; both are read once before timing, so
both come from the page cache.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HISTOFLOW_DATA", REPO.parent / "shared" / "data"))

from bench_train import EpochTimer  # noqa: E402  (images and seconds of each epoch's batches; run from bench/)

from histoflow.config import load_config  # noqa: E402
from histoflow.data.loading import make_loader  # noqa: E402
from histoflow.tiling import TileConfig, extract_tiles  # noqa: E402
from histoflow.train.data import build_run_data  # noqa: E402
from histoflow.train.fit import fit  # noqa: E402

RECIPE = REPO / "configs" / "pcam_simple_cnn.yaml"
TILE = TileConfig(tile_px=96, mpp=0.972, tissue_threshold=0.2)
# a small CNN, so that loading is a visible share of a training step on a small CPU (the recipe's
# own model trains at ~45 img/s on 2 cores against ~10k img/s of loading: no source could show)
SMALL_MODEL = "{widths: [8, 16, 32], depth: 1, pool_first: true}"
BATCH = 64
LOAD_IMAGES = 20000  # per data-loading measurement: whole passes, about a second each


def build_sources(root: Path, slides: int, grid: int) -> tuple[Path, Path, Path, int]:
    """(tiling output, label CSV, patch folder, tiles): one cohort, stored both ways."""
    spec = importlib.util.spec_from_file_location("make_pcam_cohort", REPO / "scripts" / "make_pcam_cohort.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    n_val = n_test = max(1, slides // 6)
    cohort = root / "cohort"
    script.build_cohort(
        DATA / "pcam", cohort, slides - n_val - n_test, n_val, n_test, grid=grid, seed=0, min_slides=0, quiet=True
    )
    tiles = root / "tiles"
    extract_tiles(sorted((cohort / "slides").glob("*.tif")), tiles, TILE, workers=2, progress=False)
    with open(cohort / "labels.csv", newline="") as fh:
        slide = {r["slide"]: r for r in csv.DictReader(fh)}
    patches = root / "patches"
    manifest = pq.read_table(tiles / "manifest.parquet", columns=["tile_id", "slide_id", "shard", "row"]).to_pylist()
    shards: dict[str, list] = {}
    for row in manifest:
        shards.setdefault(row["shard"], []).append(row)
    for shard, rows in shards.items():
        images = pq.read_table(tiles / shard, columns=["image"]).column("image").to_pylist()
        for row in rows:
            s = slide[row["slide_id"]]
            path = patches / s["split"] / s["label"] / f"{row['tile_id']}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(images[row["row"]])
    return tiles, cohort / "labels.csv", patches, len(manifest)


def configs(tiles: Path, labels: Path, patches: Path, steps: int, workers: int, params: str | None):
    common = [
        *([f"model.params={params}"] if params else []),
        "data.cache=none",
        f"data.num_workers={workers}",
        "data.verify=false",
        "data.image_px=96",
        "normalize.kind=imagenet",
        "train.epochs=2",
        f"train.max_steps_per_epoch={steps}",
        "train.tta=false",
        "train.early_stopping=null",
    ]
    from_tiles = load_config(RECIPE, [f"data.tiles={tiles}", f"data.labels={labels}", *common])
    from_patches = load_config(RECIPE, [f"data.path={patches}", *common])
    return {"tiles": from_tiles, "patches": from_patches}


def train_rate(cfg) -> float:
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        fit(cfg, Path(tmp) / "run", callbacks=[timer], quiet=True)
    return timer.images[1] / timer.seconds[1]


def load_rate(dataset, cfg, seed: int, images: int = LOAD_IMAGES) -> float:
    """images/s of whole shuffled passes (at least `images` images), loader start-up included."""
    start, seen = time.perf_counter(), 0
    for epoch in range(-(-images // len(dataset))):
        loader = make_loader(
            dataset, cfg.train.batch_size, cfg.data.num_workers, shuffle=True, seed=seed * 100 + epoch, persistent=False
        )
        for _, y in loader:
            seen += len(y)
    return seen / (time.perf_counter() - start)


def fill_rate(dataset, seed: int, images: int = LOAD_IMAGES) -> float:
    """images/s of the dataset's own batch filling (read + decode into one reused array) on this
    thread, no loader: the per-image cost of each source alone, least moved by other load."""
    rng = np.random.default_rng(seed)
    side = dataset.image_px
    out = np.empty((BATCH, side, side, 3), np.uint8)
    start, seen = time.perf_counter(), 0
    while seen < images:
        order = rng.permutation(len(dataset))
        for s in range(0, len(order) - BATCH + 1, BATCH):
            dataset._fill_rows(out, order[s : s + BATCH].tolist())
            seen += BATCH
    return seen / (time.perf_counter() - start)


def _summary(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "rounds": [round(v, 1) for v in values],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slides", type=int, default=60)
    p.add_argument("--grid", type=int, default=15)
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per epoch (two epochs, the second timed)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--model-params",
        default=SMALL_MODEL,
        help="simple_cnn params; '' keeps the recipe's (about 45 img/s on 2 cores: loading is then under 1%% of a step)",
    )
    p.add_argument("--load-only", action="store_true", help="skip the training rounds")
    args = p.parse_args(argv)
    if not (DATA / "pcam").exists():
        print(json.dumps({"bench": "tile_train_throughput", "skipped": f"no data at {DATA / 'pcam'}"}))
        return {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tiles, labels, patches, n_tiles = build_sources(Path(tmp), args.slides, args.grid)
        cfgs = configs(tiles, labels, patches, args.steps, args.workers, args.model_params or None)
        datasets = {name: build_run_data(cfg).train for name, cfg in cfgs.items()}
        assert len(datasets["tiles"]) == len(datasets["patches"]), "the two sources must hold the same images"
        for name, ds in datasets.items():  # both from the page cache, and warmed up alike
            load_rate(ds, cfgs[name], seed=0, images=1)
        load: dict[str, list[float]] = {"tiles": [], "patches": []}
        fill: dict[str, list[float]] = {"tiles": [], "patches": []}
        train: dict[str, list[float]] = {"tiles": [], "patches": []}
        for r in range(args.rounds):  # interleaved; the first source alternates too
            for name in ("tiles", "patches") if r % 2 == 0 else ("patches", "tiles"):
                load[name].append(load_rate(datasets[name], cfgs[name], seed=r))
                fill[name].append(fill_rate(datasets[name], seed=r))
                if not args.load_only:
                    train[name].append(train_rate(cfgs[name]))
    cfg = cfgs["tiles"]
    out = {
        "bench": "tile_train_throughput",
        "tiles": n_tiles,
        "train_images": len(datasets["tiles"]),
        "slides": args.slides,
        "model": cfg.model.name,
        "model_params": cfg.model.params,
        "batch_size": cfg.train.batch_size,
        "workers": args.workers,
        "loader_kind": type(make_loader(datasets["tiles"], 8, args.workers)).__name__,
        "timed_steps": args.steps,
        "load_img_s": {name: _summary(v) for name, v in load.items()},
        "load_ratio": round(statistics.median(load["tiles"]) / statistics.median(load["patches"]), 3),
        "fill_one_thread_img_s": {name: _summary(v) for name, v in fill.items()},
        "fill_one_thread_ratio": round(statistics.median(fill["tiles"]) / statistics.median(fill["patches"]), 3),
    }
    if not args.load_only:
        out["train_img_s"] = {name: _summary(v) for name, v in train.items()}
        out["train_ratio"] = round(statistics.median(train["tiles"]) / statistics.median(train["patches"]), 3)
        out["target_train_ratio"] = 0.9
    out.update(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        loadavg_1m=[round(load_before, 2), round(os.getloadavg()[0], 2)],
    )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
