"""Data loading: images/s through PatchDataset + histoflow's loader (2 workers) on the real PCam
folder, against the raw decode rate of the same files in one loop (the baseline). Target: the
Dataset delivers at least 90% of the raw decode rate per core (per worker).

Figures measured A/B on PCam when the loader's design was chosen (2-core VM; they move with the
machine, rerun this script for today's): thread workers instead of processes saved shared-memory
page faults worth about 40% of the decode work; reusing batch arrays saved about 4-5% of the
decode time; reading files a chunk at a time before decoding gave about 5% more images/s from
two threads.

The raw loop is histoflow's own fastest read + decode (`read_image`: os.read + libjpeg-turbo), so
the loader gets no credit for reading files faster than a naive loop would. Figures, each the best
of three interleaved rounds:

- raw_one_loop: that loop on one core, the rest of the machine idle.
- raw_all_cores: the same loop in `workers` processes at once, per process (wall clock of the
  whole pass). This is what a core really delivers while every core decodes: on a small VM two
  busy cores share caches and memory bandwidth, so it can sit below the one-core figure, and no
  loader can beat it.
- loader: `make_loader` as every histoflow verb calls it; for this dataset it picks thread workers.
  Timed over a whole pass from the loader's creation.
- torch_dataloader: torch's DataLoader with process workers over the same dataset (what training
  on several devices uses), whole pass including worker start-up.
- fill_loop_one_thread / _threads / _processes (diagnostics): the dataset's own batch-filling
  loop (chunked file reads, JPEGs decoded in place) with no loader around it, into a reused
  private array: on one thread; and over half the files each in 2 threads or 2 already running
  processes. One thread against raw_one_loop is what the loop itself gains over the plain
  per-image loop; threads against processes is what the GIL costs thread workers.

Ratios are per core: images/s / workers / raw rate.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch

from histoflow.core.images import read_image
from histoflow.data.datasets import PatchDataset
from histoflow.data.loading import ThreadLoader, make_loader
from histoflow.data.manifest import read_manifest

DATA = Path(os.environ.get("HISTOFLOW_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _decode_all(paths: list[str]) -> float:
    """Raw decode rate of one loop over `paths` (timed inside the process: no start-up)."""
    start = time.perf_counter()
    for p in paths:
        read_image(p)
    return len(paths) / (time.perf_counter() - start)


def raw_all_cores(pool, paths: list[str], workers: int) -> float:
    """Per-process raw decode rate while `workers` already running processes decode at once,
    from the wall clock of the whole pass (the slowest process sets it, as in a loader)."""
    parts = [paths[i::workers] for i in range(workers)]
    start = time.perf_counter()
    pool.map(_decode_all, parts, chunksize=1)
    return len(paths) / (time.perf_counter() - start) / workers


_DATASET: PatchDataset | None = None  # set before the pool forks: the processes inherit it
_ARRAY = threading.local()


def _fill_part(part: int, parts: int = 2) -> int:
    """Fill every `parts`-th row of _DATASET, batch by batch, into one reused array."""
    if not hasattr(_ARRAY, "a"):
        _ARRAY.a = np.empty((256, 96, 96, 3), dtype=np.uint8)
    rows = list(range(part, len(_DATASET), parts))
    for s in range(0, len(rows), 256):
        _DATASET._fill_rows(_ARRAY.a, rows[s : s + 256])
    return len(rows)


def fill_loop_one_thread() -> float:
    start = time.perf_counter()
    _fill_part(0, parts=1)
    return len(_DATASET) / (time.perf_counter() - start)


def fill_loop_rate(executor_map, workers: int) -> float:
    start = time.perf_counter()
    list(executor_map(partial(_fill_part, parts=workers), range(workers)))
    return len(_DATASET) / (time.perf_counter() - start)


def loader_rate(loader) -> float:
    start, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += len(x)
    return seen / (time.perf_counter() - start)


def main(n: int = 20000, workers: int = 2, batch_size: int = 256, rounds: int = 3) -> dict:
    pcam = DATA / "pcam" / "train"
    if not pcam.exists():
        print(json.dumps({"bench": "data_loading", "skipped": f"no data at {pcam}"}))
        return {}
    manifest = read_manifest(pcam)
    idx = np.random.default_rng(0).choice(len(manifest), size=min(n, len(manifest)), replace=False)
    manifest = manifest.subset(np.sort(idx))
    paths = manifest.frame["path"].tolist()
    for p in paths:  # warm the page cache for every contender alike
        Path(p).read_bytes()
    global _DATASET
    ds = _DATASET = PatchDataset(manifest, image_px=96)
    results: dict[str, list[float]] = {
        "raw_one_loop": [],
        "raw_all_cores": [],
        "loader": [],
        "torch_dataloader": [],
        "fill_loop_one_thread": [],
        "fill_loop_threads": [],
        "fill_loop_processes": [],
    }
    with mp.get_context("fork").Pool(workers) as pool, ThreadPoolExecutor(workers) as threads:
        pool.map(len, [[]] * workers)  # started before timing
        for _ in range(rounds):  # interleaved, so machine noise hits every contender
            results["raw_one_loop"].append(_decode_all(paths))
            results["raw_all_cores"].append(raw_all_cores(pool, paths, workers))
            loader = make_loader(ds, batch_size, workers, persistent=False)
            results["loader"].append(loader_rate(loader))
            results["torch_dataloader"].append(
                loader_rate(make_loader(ds, batch_size, workers, persistent=False, threads=False))
            )
            results["fill_loop_one_thread"].append(fill_loop_one_thread())
            results["fill_loop_threads"].append(fill_loop_rate(threads.map, workers))
            results["fill_loop_processes"].append(fill_loop_rate(partial(pool.map, chunksize=1), workers))
    best = {k: max(v) for k, v in results.items()}
    raw, raw_busy = best["raw_one_loop"], best["raw_all_cores"]
    out = {
        "bench": "data_loading",
        "images": len(paths),
        "workers": workers,
        "batch_size": batch_size,
        "loader_kind": "threads" if isinstance(loader, ThreadLoader) else "processes",
        "raw_one_loop_img_s": round(raw),
        "raw_all_cores_img_s_per_core": round(raw_busy),
        "loader_img_s": round(best["loader"]),
        "ratio_per_core": round(best["loader"] / workers / raw, 3),
        "ratio_to_raw_all_cores": round(best["loader"] / workers / raw_busy, 3),
        "target_ratio_per_core": 0.9,
        "torch_dataloader_img_s": round(best["torch_dataloader"]),
        "torch_dataloader_ratio_per_core": round(best["torch_dataloader"] / workers / raw, 3),
        "torch_dataloader_ratio_to_raw_all_cores": round(best["torch_dataloader"] / workers / raw_busy, 3),
        "raw_all_cores_scaling": round(raw_busy / raw, 3),
        "fill_loop_one_thread_ratio": round(best["fill_loop_one_thread"] / raw, 3),
        "fill_loop_threads_ratio_per_core": round(best["fill_loop_threads"] / workers / raw, 3),
        "fill_loop_processes_ratio_per_core": round(best["fill_loop_processes"] / workers / raw, 3),
        "rounds": {k: [round(x) for x in v] for k, v in results.items()},
        "torch": torch.__version__,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
