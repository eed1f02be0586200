"""Tile extraction: pure functions of (TileSpec, TileConfig), and the local engine.

The work is split so that the same functions run in a loop, a process pool or on Spark
(the CODAIT deep-histopath precedent): `plan_slide(path, cfg)` computes the tissue mask and
grid of one slide; `process_tiles(specs, cfg)` reads, checks and encodes tiles;
`write_slide_shard(...)` writes one Parquet shard. Readers are opened lazily in whichever
process runs the work and cached there (`_reader`), never pickled.

Orchestration (`extract_tiles`) is the same for every engine: skip complete slides (resume),
plan the rest, extract their shards, write a report per slide (failures included) and the
manifest. Engines differ only in how they map work: histoflow.tiling.extract.LocalEngine
(processes) or histoflow.tiling.spark.SparkEngine.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from itertools import groupby
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from histoflow.core.errors import ConfigError, DataError, HistoflowError
from histoflow.tiling.grid import TileConfig, TileSpec, tile_grid
from histoflow.tiling.shards import (atomic_write_bytes, atomic_write_json, shard_path, shard_stats,
                                     slide_dir, write_manifest, write_shard)
from histoflow.tiling.tissue import TissueMask, tissue_mask

log = logging.getLogger(__name__)
MAX_OPEN_READERS = 8           # per process: bounded file handles and OpenSlide caches
_READERS: "OrderedDict[tuple, object]" = OrderedDict()
_IN_MEMORY: dict[str, object] = {}  # "<array ...>" path -> ArraySlide, for tests and montages
_READERS_LOCK = threading.Lock()    # small jobs read tiles on threads (see LocalEngine.extract)


# -- readers, opened lazily in whichever process does the work ---------------------------------
def _reader(path: str, cfg: TileConfig):
    if path in _IN_MEMORY:
        return _IN_MEMORY[path]
    key = (path, cfg.backend, cfg.slide_mpp)
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            from histoflow.slide.open import open_slide

            reader = _READERS[key] = open_slide(path, backend=cfg.backend, mpp=cfg.slide_mpp)
            while len(_READERS) > MAX_OPEN_READERS:
                _READERS.popitem(last=False)[1].close()
        else:
            _READERS.move_to_end(key)
    return reader


def close_readers() -> None:
    """Close the readers this process opened (their caches and kept levels go with them)."""
    with _READERS_LOCK:
        while _READERS:
            _READERS.popitem(last=False)[1].close()


def register_in_memory(slide) -> str:
    """Make an in-memory slide (ArraySlide) addressable by its path in this and forked processes."""
    _IN_MEMORY[slide.path] = slide
    return slide.path


def reset_peak_rss() -> None:
    """Start this process's peak-memory figure (VmHWM) afresh, where Linux allows it: a job run
    in-process reports its own peak, not whatever the calling process did before."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:  # not Linux, or not permitted: the figure stays the process's lifetime peak
        pass


def max_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux keeps ru_maxrss across fork+exec, so a worker started from a big parent (a pytest run
    with torch loaded) would report the parent's peak; VmHWM is this process's own. getrusage
    is the fallback elsewhere (macOS reports bytes there, Linux KiB)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


# -- planning: mask + grid of one slide ---------------------------------------------------------
@dataclass
class SlidePlan:
    path: str
    slide_id: str
    specs: list[TileSpec] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    n_candidates: int = 0
    rejected_tissue: int = 0
    tissue_fraction: float = 0.0
    pen_fraction: float = 0.0
    plan_s: float = 0.0
    error: str | None = None
    thumbnail_png: bytes = b""
    mask_png: bytes = b""

    @property
    def n_shards(self) -> int:
        return (self.specs[-1].shard + 1) if self.specs else 0


def mask_view(slide, cfg: TileConfig) -> tuple[np.ndarray, float]:
    """A low-resolution RGB view of the whole slide and its downsample (level-0 px per px)."""
    w, h = slide.dimensions
    if slide.mpp:
        downsample = max(1.0, cfg.mask_um_per_px / slide.mpp)
    else:
        downsample = max(1.0, max(w, h) / 2048)
    downsample = max(downsample, max(w, h) / 8192)  # keep the view a few tens of MB at most
    return slide.read_downsampled(downsample), downsample


def plan_slide(path: str, cfg: TileConfig) -> SlidePlan:
    """Tissue mask, tile grid and preview images of one slide. Never raises for a bad slide:
    the error is returned, so one corrupt file cannot stop a batch."""
    from histoflow.slide.base import slide_id_of

    t0 = time.perf_counter()
    plan = SlidePlan(path=str(path), slide_id=_IN_MEMORY[path].slide_id if path in _IN_MEMORY else slide_id_of(path))
    try:
        slide = _reader(str(path), cfg)
        plan.slide_id = slide.slide_id
        plan.info = slide.info()
        view, downsample = mask_view(slide, cfg)
        mask = tissue_mask(view, downsample, mpp=slide.mpp, method=cfg.tissue_method,
                           min_area_um2=cfg.min_tissue_um2, reject_pen=cfg.reject_pen)
        grid = tile_grid(slide, mask, cfg)
        plan.specs = grid.specs
        plan.n_candidates, plan.rejected_tissue = grid.n_candidates, grid.rejected_tissue
        plan.tissue_fraction, plan.pen_fraction = mask.tissue_fraction, mask.pen_fraction
        plan.info.update(tile_level=grid.level, region_px0=grid.region_px0, stride_px0=grid.stride_px0, tile_mpp=grid.mpp,
                         mask_downsample=round(downsample, 4), mask_threshold=mask.threshold)
        plan.thumbnail_png = _png(draw_overview(view, mask, grid.specs, grid.region_px0))
        plan.mask_png = _png(mask.mask.astype(np.uint8) * 255)
    except HistoflowError as exc:
        plan.error = str(exc)
    except Exception as exc:  # an unexpected failure in one slide is still that slide's failure
        log.exception("%s: planning failed", path)
        plan.error = f"{path}: {type(exc).__name__}: {exc}"
    plan.plan_s = round(time.perf_counter() - t0, 3)
    return plan


def draw_overview(view: np.ndarray, mask: TissueMask, specs: Sequence[TileSpec], region_px0: int) -> np.ndarray:
    """The slide view with tissue tinted green, its outline, and every kept tile as a box."""
    import cv2

    img = view.copy()
    tint = img.copy()
    tint[mask.mask] = (0.6 * tint[mask.mask] + 0.4 * np.array([0, 200, 0])).astype(np.uint8)
    img = tint
    contours, _ = cv2.findContours(mask.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, (0, 120, 0), 1)
    d = mask.downsample
    side = max(1, int(round(region_px0 / d)))
    for s in specs:
        x, y = int(s.x / d), int(s.y / d)
        cv2.rectangle(img, (x, y), (x + side - 1, y + side - 1), (0, 0, 255), 1)
    return img


def _png(arr: np.ndarray) -> bytes:
    import cv2

    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover
        raise DataError("cannot encode preview PNG")
    return buf.tobytes()


# -- one tile ---------------------------------------------------------------------------------
MAX_BLOCK_PX = 4096          # widest / tallest region read at once for neighbouring tiles (level px)
MAX_BLOCK_AREA = 4096 * 2048  # 32 MB of RGBA at most per block read


def _resize(img: np.ndarray, spec: TileSpec) -> np.ndarray:
    import cv2

    if spec.read_px != spec.tile_px:
        interp = cv2.INTER_AREA if spec.read_px > spec.tile_px else cv2.INTER_CUBIC
        img = cv2.resize(img, (spec.tile_px, spec.tile_px), interpolation=interp)
    return img


def read_region(slide, xy_level0: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
    """slide.read_region, cut from the whole level when the reader kept it in memory (a small
    slide whose tissue mask read it whole: see BaseSlide.read_downsampled)."""
    kept = getattr(slide, "kept_level", None)
    if kept is not None and kept[0] == level:
        ds = slide.level_downsamples[level]
        x, y = xy_level0[0] / ds, xy_level0[1] / ds
        arr = kept[1]
        if x == int(x) and y == int(y) and 0 <= x and 0 <= y and x + size[0] <= arr.shape[1] and y + size[1] <= arr.shape[0]:
            return arr[int(y):int(y) + size[1], int(x):int(x) + size[0]].copy()
    return slide.read_region(xy_level0, level, size)


def read_tile(slide, spec: TileSpec) -> np.ndarray:
    """The tile's pixels at its output size (area-resized from the level it is read at)."""
    return _resize(read_region(slide, (spec.x, spec.y), spec.level, (spec.read_px, spec.read_px)), spec)


@dataclass
class _Block:
    """Neighbouring tiles read as one region: level px offsets from (x0, y0) in level-0 px."""
    specs: list
    x0: int
    y0: int
    ds: float
    right: int   # level px, exclusive
    bottom: int

    def offset(self, spec: TileSpec) -> tuple[int, int] | None:
        ox, oy = (spec.x - self.x0) / self.ds, (spec.y - self.y0) / self.ds
        return (int(ox), int(oy)) if ox == int(ox) and oy == int(oy) else None


def _blocks(slide, specs: Sequence[TileSpec]) -> list[_Block]:
    """Group specs (in grid order) into blocks that one region read covers without reading more
    pixels than tile-by-tile reads would: overlapping or touching tiles of one or more rows.
    Only where every offset is a whole number of level px, so a slice of the block is exactly
    the pixels read_region gives for that tile."""
    blocks: list[_Block] = []
    for spec in specs:
        b = blocks[-1] if blocks else None
        if b is not None:
            first = b.specs[0]
            off = b.offset(spec)
            if (off is not None and off[0] >= 0 and off[1] >= 0 and spec.level == first.level
                    and spec.read_px == first.read_px and spec.slide == first.slide):
                right, bottom = max(b.right, off[0] + spec.read_px), max(b.bottom, off[1] + spec.read_px)
                tiles_area = (len(b.specs) + 1) * spec.read_px ** 2
                if right <= MAX_BLOCK_PX and bottom <= MAX_BLOCK_PX and right * bottom <= min(tiles_area, MAX_BLOCK_AREA):
                    b.specs.append(spec)
                    b.right, b.bottom = right, bottom
                    continue
        blocks.append(_Block([spec], spec.x, spec.y, slide.level_downsamples[spec.level], spec.read_px, spec.read_px))
    return blocks


def read_tiles(slide, specs: Sequence[TileSpec]) -> list[np.ndarray | Exception]:
    """Pixels of each spec (or the exception reading it raised), in order.

    Neighbouring tiles are cut from one region read: with overlap (stride < tile) a tile-by-tile
    loop reads and decodes every pixel several times (16 times at stride 64 for 256 px tiles);
    this reads it once. A block that fails to read falls back to single tiles, so only the bad
    tiles fail."""
    out: list[np.ndarray | Exception] = []
    for b in _blocks(slide, specs):
        region = None
        if len(b.specs) > 1:
            try:
                region = read_region(slide, (b.x0, b.y0), b.specs[0].level, (b.right, b.bottom))
            except Exception:  # noqa: BLE001 - retried tile by tile below, which names the bad tile
                region = None
        for spec in b.specs:
            try:
                if region is not None:
                    ox, oy = b.offset(spec)
                    tile = region[oy:oy + spec.read_px, ox:ox + spec.read_px]
                    out.append(_resize(np.ascontiguousarray(tile), spec))
                else:
                    out.append(read_tile(slide, spec))
            except Exception as exc:  # noqa: BLE001 - reported per tile by tile_result
                out.append(exc)
    return out


def tile_qc(img: np.ndarray) -> tuple[float, float]:
    """(whitespace fraction, Laplacian variance): glass pixels are bright and grey."""
    import cv2

    # OpenCV, not numpy axis-2 reductions: these run per tile and numpy's were 5 ms of ~8
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    r, g, b = cv2.split(img)
    spread = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    glass = cv2.bitwise_and(cv2.compare(gray, 220, cv2.CMP_GT), cv2.compare(spread, 25, cv2.CMP_LT))
    whitespace = cv2.countNonZero(glass) / glass.size
    _mean, std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))  # exact for uint8 input, faster than float
    return float(whitespace), float(std[0, 0] ** 2)


def encode_tile(img: np.ndarray, cfg: TileConfig) -> bytes:
    if cfg.image_format == "jpeg":
        import simplejpeg

        return simplejpeg.encode_jpeg(np.ascontiguousarray(img), quality=cfg.jpeg_quality, colorspace="RGB",
                                      colorsubsampling="420")
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise DataError("cannot encode tile as PNG")
    return buf.tobytes()


def tile_result(spec: TileSpec, img: np.ndarray | Exception, cfg: TileConfig) -> tuple[str, dict | str]:
    """("kept", row) or ("rejected", reason) or ("error", message). Never raises for bad data."""
    if isinstance(img, HistoflowError):
        return "error", f"{spec.tile_id}: {img}"
    if isinstance(img, Exception):
        return "error", f"{spec.tile_id}: {type(img).__name__}: {img}"
    whitespace, blur_var = tile_qc(img)
    if cfg.whitespace_max is not None and whitespace > cfg.whitespace_max:
        return "rejected", "whitespace"
    if cfg.blur_min is not None and blur_var < cfg.blur_min:
        return "rejected", "blur"
    return "kept", {
        "tile_id": spec.tile_id, "slide_id": spec.slide_id, "x": spec.x, "y": spec.y, "level": spec.level, "size_px0": spec.size_px0,
        "mpp": spec.mpp, "tile_px": spec.tile_px, "tissue_fraction": spec.tissue_fraction,
        "whitespace_fraction": round(whitespace, 4), "blur_var": round(blur_var, 2),
        "image_format": cfg.image_format, "image": encode_tile(img, cfg),
    }


def process_tile(spec: TileSpec, cfg: TileConfig) -> tuple[str, dict | str]:
    """Read, check and encode one tile: see tile_result."""
    return process_tiles([spec], cfg)[0][0]


def process_tiles(specs: Sequence[TileSpec], cfg: TileConfig) -> tuple[list, float]:
    """A batch of tiles (one pool task) and this worker's peak memory so far."""
    results: list[tuple[str, dict | str]] = []
    for slide_path, tiles in groupby(specs, key=lambda spec: spec.slide):  # runs of one slide
        group = list(tiles)
        try:
            images = read_tiles(_reader(slide_path, cfg), group)
        except Exception as exc:  # noqa: BLE001 - the slide cannot be opened: every tile fails
            images = [exc] * len(group)
        results.extend(tile_result(s, img, cfg) for s, img in zip(group, images))
    return results, max_rss_mb()




class ShardAccumulator:
    """Collects the results of one shard's tiles (in spec order) into rows and stats."""

    def __init__(self, slide_id: str, shard: int, n_tiles: int):
        self.slide_id, self.shard, self.n_tiles = slide_id, shard, n_tiles
        self.rows: list[dict] = []
        self.rejected: Counter = Counter()
        self.errors: list[str] = []
        self.seen = 0

    def add(self, status: str, payload, cfg: TileConfig) -> None:
        self.seen += 1
        if status == "kept":
            self.rows.append(payload)
        elif status == "rejected":
            self.rejected[payload] += 1
        else:
            self.rejected["read_error"] += 1
            self.errors.append(payload)

    @property
    def done(self) -> bool:
        return self.seen == self.n_tiles

    def failed(self, cfg: TileConfig) -> bool:
        return bool(self.errors) and cfg.on_tile_error == "fail"

    def stats(self, maxrss_mb: float) -> dict:
        return {"slide_id": self.slide_id, "shard": self.shard, "tiles": self.n_tiles, "kept": len(self.rows),
                "rejected": dict(self.rejected), "errors": self.errors[:5], "worker_maxrss_mb": round(maxrss_mb, 1)}


def write_slide_shard(out: str, specs: Sequence[TileSpec], cfg: TileConfig) -> dict:
    """Process and write one shard (all `specs` share slide and shard index): the Spark task.
    A shard with a failed read under on_tile_error=fail is not written, so a re-run retries it."""
    acc = ShardAccumulator(specs[0].slide_id, specs[0].shard, len(specs))
    results, rss = process_tiles(specs, cfg)
    for status, payload in results:
        acc.add(status, payload, cfg)
    stats = acc.stats(rss)
    if not acc.failed(cfg):
        write_shard(shard_path(Path(out), acc.slide_id, acc.shard), acc.rows, stats)
    stats["failed"] = acc.failed(cfg)
    return stats


# -- engines ------------------------------------------------------------------------------------
class LocalEngine:
    """Every core of this machine over the tiles of all slides (`workers=1`: a plain loop).

    Workers read, check and encode tiles; this process assembles them into shards in spec
    order and writes them, so shards are identical whatever the workers are.

    Small and medium jobs (fewer than `min_pool_tiles` tiles, at most `max_thread_slides`
    slides) run on threads of this process: OpenSlide, OpenCV and libjpeg-turbo release the
    GIL, nothing has to start, and a small slide's pixels read for its tissue mask are reused
    for its tiles. Measured on 2 cores: 8 copies of the CMU slide (4k tiles) at 1,700-1,800
    tiles/s on threads vs 960-1,350 with the process pool; a 40,000 px slide (6.7k tiles)
    1,600 either way. Bigger jobs use a process pool (forkserver): memory stays per worker and
    Python work never contends for one GIL on many cores.
    """

    name = "local"

    def __init__(self, workers: int | None = None, batch_tiles: int = 64, progress: bool = True,
                 min_pool_tiles: int = 20_000, max_thread_slides: int = 32):
        self.workers = workers or os.cpu_count() or 1
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.batch_tiles = batch_tiles
        self.progress = progress
        self.min_pool_tiles = min_pool_tiles
        self.max_thread_slides = max_thread_slides
        self.pool_started = False
        self._pool = None

    def __enter__(self):
        return self

    def _start_pool(self) -> None:
        if self._pool is not None or self.workers < 2:
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # Not fork: a parent that already ran OpenCV/OpenMP/glib thread pools (any caller that
        # touched an image) can deadlock its forked children. forkserver forks from a clean
        # server that preloads this module, so workers still start in milliseconds.
        if "forkserver" in mp.get_all_start_methods():
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["histoflow.tiling.extract"])
        else:  # pragma: no cover - Windows
            ctx = mp.get_context("spawn")
        self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init,
                                         initargs=(dict(_IN_MEMORY),))
        self.pool_started = True

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        close_readers()  # this process read tiles too: free its slide caches and kept levels

    def plan(self, paths: Sequence[str], cfg: TileConfig) -> list[SlidePlan]:
        if len(paths) > self.max_thread_slides:
            self._start_pool()
        if self._pool is not None:
            return list(self._pool.map(plan_slide, paths, [cfg] * len(paths)))
        reset_peak_rss()  # the job runs in this process: report its peak, not the caller's earlier one
        if self.workers < 2 or len(paths) < 2:
            return [plan_slide(p, cfg) for p in paths]
        with ThreadPoolExecutor(self.workers, thread_name_prefix="histoflow-plan") as threads:
            return list(threads.map(plan_slide, paths, [cfg] * len(paths)))

    def extract(self, out: Path, plans: Sequence[SlidePlan], todo: dict, cfg: TileConfig, on_shard) -> None:
        """Run the specs of the shards in `todo` ({slide_id: set(shard)}); call on_shard(stats)."""
        specs = [s for p in plans for s in p.specs if s.shard in todo.get(p.slide_id, ())]
        sizes = Counter((s.slide_id, s.shard) for s in specs)
        if len(specs) >= self.min_pool_tiles:
            self._start_pool()
        accs: dict[tuple, ShardAccumulator] = {}
        peak = {"rss": 0.0}  # the workers' peak, as they report it (not this driver's)

        def consume(batch_specs, results, rss):
            peak["rss"] = max(peak["rss"], rss)
            for spec, (status, payload) in zip(batch_specs, results):
                key = (spec.slide_id, spec.shard)
                acc = accs.get(key) or accs.setdefault(key, ShardAccumulator(spec.slide_id, spec.shard, sizes[key]))
                acc.add(status, payload, cfg)
                if acc.done:
                    stats = acc.stats(peak["rss"])
                    if not acc.failed(cfg):
                        write_shard(shard_path(out, acc.slide_id, acc.shard), acc.rows, stats)
                    stats["failed"] = acc.failed(cfg)
                    del accs[key]
                    on_shard(stats)

        if self._pool is not None and len(sizes) >= 3 * self.workers:
            return self._extract_by_shard(out, specs, cfg, on_shard)
        batches = [specs[i:i + self.batch_tiles] for i in range(0, len(specs), self.batch_tiles)]
        with _progress(len(specs), self.progress) as advance:
            if self._pool is None and (self.workers < 2 or len(batches) < 2):
                for b in batches:
                    consume(b, *process_tiles(b, cfg))
                    advance(len(b))
                return
            # no pool: threads of this process (see the class docstring)
            executor = self._pool or ThreadPoolExecutor(self.workers, thread_name_prefix="histoflow-tile")
            try:
                window: deque = deque()
                for b in batches:  # a bounded window of tasks in flight: memory stays flat for millions of tiles
                    window.append((b, executor.submit(process_tiles, b, cfg)))
                    if len(window) >= 4 * self.workers:
                        done_b, fut = window.popleft()
                        consume(done_b, *fut.result())
                        advance(len(done_b))
                while window:
                    done_b, fut = window.popleft()
                    consume(done_b, *fut.result())
                    advance(len(done_b))
            finally:
                if executor is not self._pool:  # threads started here stop here, also on an error
                    executor.shutdown(cancel_futures=True)


    def _extract_by_shard(self, out: Path, specs: Sequence[TileSpec], cfg: TileConfig, on_shard) -> None:
        """Enough shards to keep every worker busy: each worker writes whole shards itself (the
        Spark task, write_slide_shard), so pixels never travel back to this process. Same
        shards, same rows, same order as tile-level tasks."""
        from concurrent.futures import FIRST_COMPLETED, wait

        groups: dict[tuple, list] = {}
        for spec in specs:
            groups.setdefault((spec.slide_id, spec.shard), []).append(spec)
        pending = set()
        with _progress(len(specs), self.progress) as advance:
            for group in groups.values():
                pending.add(self._pool.submit(write_slide_shard, str(out), group, cfg))
                if len(pending) >= 2 * self.workers:  # bounded: the spec lists stay here until needed
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        stats = fut.result()
                        on_shard(stats)
                        advance(stats["tiles"])
            for fut in wait(pending).done:
                stats = fut.result()
                on_shard(stats)
                advance(stats["tiles"])


def _worker_init(in_memory: dict) -> None:
    _IN_MEMORY.update(in_memory)  # in-memory slides travel once per worker, not once per tile
    try:
        import cv2

        cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe
    except ImportError:  # pragma: no cover
        pass


class _progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled and not os.environ.get("HISTOFLOW_QUIET")
        self._p = None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("tiles"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
        self._p.start()
        task = self._p.add_task("tiles", total=self.total)
        return lambda n: self._p.advance(task, n)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.stop()


# -- orchestration --------------------------------------------------------------------------------
def _slide_paths(slides: Iterable) -> list[str]:
    paths = []
    for s in slides:
        if hasattr(s, "read_region"):  # an in-memory slide object
            paths.append(register_in_memory(s))
        else:
            paths.append(str(s))
    return paths


def _check_config(out: Path, cfg: TileConfig) -> None:
    import json

    path = out / "config.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("fingerprint") != cfg.fingerprint():
            changed = sorted(k for k, v in cfg.to_dict().items() if previous.get("tile", {}).get(k) != v)
            raise ConfigError(f"{out}: holds tiles made with a different config (changed: {changed}); "
                              "use a new --out folder")
    else:
        atomic_write_json(path, {"fingerprint": cfg.fingerprint(), "tile": cfg.to_dict()})


def _report_complete(out: Path, slide_id: str, cfg: TileConfig) -> bool:
    import json

    path = slide_dir(out, slide_id) / "report.json"
    if not path.exists():
        return False
    try:
        report = json.loads(path.read_text())
    except ValueError:
        return False
    return report.get("status") == "complete" and report.get("fingerprint") == cfg.fingerprint()


def extract_tiles(slides: Iterable, out: str | Path, cfg: TileConfig | None = None, engine: str | object = "local",
                  workers: int | None = None, spark_master: str | None = None, progress: bool = True) -> dict:
    """Tile every slide into Parquet shards under `out`; returns a summary with one report per slide.

    Complete slides (report.json with status complete and the same config) are skipped, so
    re-running the same command resumes. A slide that cannot be read is reported as failed;
    the others go on.
    """
    cfg = cfg or TileConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, cfg)
    paths = _slide_paths(slides)
    if not paths:
        raise ConfigError("no slides given")
    if engine == "local":
        engine = LocalEngine(workers=workers, progress=progress)
    elif engine == "spark":
        from histoflow.tiling.spark import SparkEngine

        engine = SparkEngine(master=spark_master or "local[*]")
    elif isinstance(engine, str):
        raise ConfigError(f"engine must be 'local' or 'spark', got {engine!r}")

    from histoflow.slide.base import slide_id_of

    ids = {}
    for p in paths:
        sid = _IN_MEMORY[p].slide_id if p in _IN_MEMORY else slide_id_of(p)
        if sid in ids and ids[sid] != p:
            raise ConfigError(f"slides {ids[sid]} and {p} have the same slide id {sid!r}; tile ids would collide")
        ids[sid] = p
    skipped = [sid for sid in ids if _report_complete(out, sid, cfg)]
    todo_paths = [p for sid, p in ids.items() if sid not in skipped]
    for sid in skipped:
        log.info("%s: already complete, skipped", sid)

    t0 = time.perf_counter()
    reports: dict[str, dict] = {}
    with engine:
        plans = engine.plan(todo_paths, cfg) if todo_paths else []
        todo: dict[str, set] = {}
        shard_results: dict[str, list] = {}
        for plan in plans:
            d = slide_dir(out, plan.slide_id)
            if plan.thumbnail_png:
                atomic_write_bytes(d / "thumbnail.png", plan.thumbnail_png)
                atomic_write_bytes(d / "mask.png", plan.mask_png)
            shard_results[plan.slide_id] = []
            if plan.error:
                continue
            for shard in range(plan.n_shards):  # resume inside a slide: finished shards stay
                path = shard_path(out, plan.slide_id, shard)
                if path.exists():
                    shard_results[plan.slide_id].append(dict(shard_stats(path), failed=False, resumed=True))
                else:
                    todo.setdefault(plan.slide_id, set()).add(shard)
        started = {p.slide_id: time.perf_counter() for p in plans}
        finished: dict[str, float] = {}

        def on_shard(stats):
            shard_results[stats["slide_id"]].append(stats)
            finished[stats["slide_id"]] = time.perf_counter()

        if todo:
            engine.extract(out, plans, todo, cfg, on_shard)
        for plan in plans:
            report = _slide_report(plan, shard_results[plan.slide_id], cfg,
                                   finished.get(plan.slide_id, started[plan.slide_id]) - started[plan.slide_id])
            atomic_write_json(slide_dir(out, plan.slide_id) / "report.json", report)
            reports[plan.slide_id] = report
            level = logging.INFO if report["status"] == "complete" else logging.ERROR
            log.log(level, "%s: %s, %d tiles kept%s", plan.slide_id, report["status"], report["kept"],
                    f" ({report['error']})" if report.get("error") else "")

    complete = [sid for sid in ids if sid in skipped or reports.get(sid, {}).get("status") == "complete"]
    write_manifest(out, complete)
    elapsed = time.perf_counter() - t0
    kept = sum(r["kept"] for r in reports.values())
    return {"out": str(out), "engine": engine.name, "slides": len(ids), "complete": len(complete),
            "skipped": skipped, "failed": sorted(sid for sid, r in reports.items() if r["status"] != "complete"),
            "tiles_kept": kept, "seconds": round(elapsed, 3),
            "tiles_per_s": round(kept / elapsed, 2) if elapsed > 0 else None, "reports": reports}


def _slide_report(plan: SlidePlan, shards: list[dict], cfg: TileConfig, extract_s: float) -> dict:
    import histoflow

    rejected = Counter({"tissue": plan.rejected_tissue})
    errors = []
    for s in shards:
        rejected.update(s.get("rejected", {}))
        errors += s.get("errors", [])
    failed_shards = [s["shard"] for s in shards if s.get("failed")]
    missing = plan.n_shards - len(shards)
    error = plan.error
    if error is None and failed_shards:
        error = f"{len(failed_shards)} shard(s) failed to read; first error: {errors[0] if errors else '?'}"
    if error is None and missing:
        error = f"{missing} shard(s) never finished"
    warning = None
    if error is None and not plan.specs:
        warning = (f"{plan.slide_id}: no tile reaches the tissue threshold {cfg.tissue_threshold} "
                   f"(tissue is {plan.tissue_fraction:.1%} of the slide view); no tiles written")
        log.warning(warning)
    return {
        "slide_id": plan.slide_id, "path": plan.path, "status": "failed" if error else "complete",
        "error": error, "warning": warning, "fingerprint": cfg.fingerprint(), "histoflow_version": histoflow.__version__,
        "candidates": plan.n_candidates, "kept": sum(s.get("kept", 0) for s in shards if not s.get("failed")),
        "rejected": dict(sorted(rejected.items())), "tile_errors": errors[:20],
        "tissue_fraction": round(plan.tissue_fraction, 4), "pen_fraction": round(plan.pen_fraction, 4),
        "shards": len(shards) - len(failed_shards), "resumed_shards": sum(1 for s in shards if s.get("resumed")),
        "seconds": {"plan": plan.plan_s, "extract": round(extract_s, 3)},
        "worker_maxrss_mb": max((s.get("worker_maxrss_mb", 0) for s in shards), default=None),
        "slide": plan.info,
    }
