"""Tiling throughput: histoflow's local engine vs a naive loop, and Spark local[2] vs local.

Run: PYTHONPATH=src python bench/bench_tiling.py [--size 40000] [--workers 2] [--no-spark]
Prints one JSON line per case with its figures and the ratio to its baseline.

naive = one Python loop over the same tile grid: OpenSlide read_region + PIL resize + PIL JPEG
encode (quality 90), bytes kept in memory (no Parquet, no tissue detection: a generous baseline).
local = histoflow.extract_tiles end to end (tissue mask, grid, threads or process pool, QC, JPEG,
Parquet shards, reports, manifest), pool start-up included, in a fresh child process whose
imports and first library calls are warmed up outside the timer (as the naive loop's are).
spark = the same through Spark local[N], timed once the session is up and its Python workers
are warm (start-up, 5-15 s here, is reported separately).
Peak memory per worker is VmHWM (ru_maxrss where /proc is absent) reported by each worker; a
job run on threads reports this process's peak from the start of the job (the naive loop runs
in a child process so that its memory is not counted).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from histoflow.tiling import TileConfig, extract_tiles, plan_slide  # noqa: E402

DATA = Path(os.environ.get("HISTOFLOW_DATA", REPO.parent / "shared" / "data"))


def naive(path: str, cfg: TileConfig) -> tuple[int, float]:
    import openslide
    from PIL import Image

    specs = plan_slide(path, cfg).specs  # same grid; planning is not timed for the baseline
    t0 = time.perf_counter()
    slide = openslide.OpenSlide(path)
    out = []
    for s in specs:
        img = slide.read_region((s.x, s.y), s.level, (s.read_px, s.read_px)).convert("RGB")
        if s.read_px != s.tile_px:
            img = img.resize((s.tile_px, s.tile_px), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=cfg.jpeg_quality)
        out.append(buf.getvalue())
    return len(out), time.perf_counter() - t0


def naive_many(paths: list[str], cfg) -> tuple[int, float]:
    return tuple(map(sum, zip(*(naive(p, cfg) for p in paths))))


def in_fresh_process(fn, *args):
    """fn(*args) in a freshly spawned process (timed there): its memory, imports and caches are
    its own, so the peak memory each contender reports is its own too."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def naive_elsewhere(paths: list[str], cfg) -> tuple[int, float]:
    """The naive loop in a child process: its OpenSlide cache (1 GiB by default) and the tile
    bytes it keeps must not count in the engine's peak memory."""
    return in_fresh_process(naive_many, paths, cfg)


def _warm_up(paths, cfg) -> None:
    """Once-per-process costs (imports, first calls into OpenCV/libjpeg/pyarrow, the slide's
    first open) stay outside the timer, as the naive loop's do (it plans, untimed, first)."""
    import numpy as np

    from histoflow.slide import ArraySlide, open_slide
    from histoflow.tiling.readers import close_readers

    tiny = ArraySlide(np.full((512, 512, 3), (220, 140, 185), np.uint8), mpp=0.5, slide_id="warm-up")
    with tempfile.TemporaryDirectory() as scratch:
        extract_tiles([tiny], Path(scratch) / "o", TileConfig(tile_px=128, mpp=0.5, tissue_threshold=0), progress=False)
    for p in paths:
        open_slide(p).close()
    close_readers()


def engine_child(paths, cfg, out: Path, workers: int) -> dict:
    _warm_up(paths, cfg)
    return engine_run(paths, cfg, out, workers=workers)


def engine_elsewhere(paths, cfg, out: Path, workers: int) -> dict:
    """The local engine in a fresh child process: its peak memory is its own (the tiling
    process's VmHWM, from the start of the job), not this benchmark's."""
    return in_fresh_process(engine_child, [str(p) for p in paths], cfg, out, workers)


def engine_run(paths, cfg, out: Path, **kw) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    s = extract_tiles(paths, out, cfg, progress=False, **kw)
    s["wall_s"] = time.perf_counter() - t0
    if s["failed"]:
        raise SystemExit(f"benchmark slide failed: {s['reports']}")
    s["worker_peak_mb"] = max(r["worker_maxrss_mb"] or 0 for r in s["reports"].values())
    return s


def case_local_vs_naive(name, path, cfg, workers, tmp, copies: int = 1) -> dict:
    paths = [path]
    if copies > 1:  # many slides: symlinked copies under distinct names (distinct slide ids)
        (tmp / "copies").mkdir(exist_ok=True)
        paths = []
        for i in range(copies):
            link = tmp / "copies" / f"{Path(path).stem}-{i}{Path(path).suffix}"
            link.symlink_to(path)
            paths.append(link)
    n_naive, t_naive = naive_elsewhere([str(p) for p in paths], cfg)
    s = engine_elsewhere(paths, cfg, tmp / name, workers=workers)
    local_rate, naive_rate = s["tiles_kept"] / s["wall_s"], n_naive / t_naive
    return {
        "case": name,
        "slide": Path(path).name,
        "slides": len(paths),
        "tile_px": cfg.tile_px,
        "mpp": cfg.mpp,
        "overlap_px": cfg.overlap_px,
        "tiles_naive": n_naive,
        "tiles_local": s["tiles_kept"],
        "workers": workers,
        "naive_tiles_per_s": round(naive_rate, 1),
        "local_tiles_per_s": round(local_rate, 1),
        "ratio": round(local_rate / naive_rate, 2),
        "target_ratio": 1.8,
        "worker_peak_mb": round(s["worker_peak_mb"], 1),
        "target_worker_peak_mb": 1024,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def case_spark(path, cfg, workers, tmp) -> dict:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from histoflow.tiling.spark import SparkEngine, spark_session

    t0 = time.perf_counter()
    spark = spark_session(f"local[{workers}]")
    spark.sparkContext.setLogLevel("ERROR")
    # warm the executors' Python workers (spawned, histoflow imported): a once-per-cluster cost,
    # counted in spark_startup_s and not in the tiles/s
    spark.sparkContext.parallelize(range(workers * 4), workers * 4).map(
        lambda i: __import__("histoflow.tiling.work") and i
    ).count()
    startup = time.perf_counter() - t0
    try:
        local = engine_elsewhere([path], cfg, tmp / "spark_local", workers=workers)
        sp = engine_run([path], cfg, tmp / "spark_spark", engine=SparkEngine(session=spark))
    finally:
        spark.stop()
    lr, sr = local["tiles_kept"] / local["wall_s"], sp["tiles_kept"] / sp["wall_s"]
    return {
        "case": "spark_vs_local",
        "slide": Path(path).name,
        "tiles": sp["tiles_kept"],
        "master": f"local[{workers}]",
        "spark_startup_s": round(startup, 1),
        "local_tiles_per_s": round(lr, 1),
        "spark_tiles_per_s": round(sr, 1),
        "ratio": round(sr / lr, 2),
        "target_ratio": 0.7,
        "spark_worker_peak_mb": round(sp["worker_peak_mb"], 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=40000, help="side of the synthetic slide in px (0.25 um/px)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "histoflow-bench")
    ap.add_argument("--no-spark", action="store_true")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tiling-"))
    try:
        cmu = DATA / "wsi" / "cmu-1-small-region.svs"
        if cmu.exists():
            # the real slide gives ~30 tiles at stride 256: overlap (stride 64) makes a run long enough to time
            cfg = TileConfig(tile_px=256, mpp=0.5, overlap_px=192, tiles_per_shard=256)
            print(json.dumps(case_local_vs_naive("cmu_local_vs_naive", cmu, cfg, args.workers, tmp)), flush=True)
            # one small slide is dominated by fixed costs (pool start, tissue mask): 8 slides amortise them
            print(
                json.dumps(case_local_vs_naive("cmu_x8_local_vs_naive", cmu, cfg, args.workers, tmp, copies=8)),
                flush=True,
            )
        from histoflow.slide.synthetic import write_synthetic_slide

        syn = args.cache / f"synthetic-{args.size}.tif"
        if not syn.exists():
            t0 = time.perf_counter()
            write_synthetic_slide(syn, args.size, args.size, mpp=0.25, tile_px=512, seed=0)
            print(
                json.dumps(
                    {
                        "case": "generate_synthetic",
                        "size_px": args.size,
                        "seconds": round(time.perf_counter() - t0, 1),
                        "bytes": syn.stat().st_size,
                    }
                ),
                flush=True,
            )
        cfg = TileConfig(tile_px=256, mpp=0.25, tiles_per_shard=256)  # level 0, the common case
        print(json.dumps(case_local_vs_naive("synthetic_local_vs_naive", syn, cfg, args.workers, tmp)), flush=True)
        if not args.no_spark:
            print(json.dumps(case_spark(syn, cfg, args.workers, tmp)), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
