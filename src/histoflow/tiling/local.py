"""The local engine: every core of this machine, on threads or a process pool.

Engines differ only in how they map the work of tiling.work over the specs; orchestration
(resume, reports, manifest) is tiling.extract's, the same for every engine.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, cast

from histoflow.config.tiling import TileConfig
from histoflow.core.errors import ConfigError
from histoflow.core.progress import progress_bar
from histoflow.tiling.grid import TileSpec
from histoflow.tiling.memory import reset_peak_rss
from histoflow.tiling.plan import SlidePlan, plan_slide
from histoflow.tiling.readers import add_in_memory, close_readers, in_memory_slides
from histoflow.tiling.shards import shard_path, write_shard
from histoflow.tiling.work import ShardAccumulator, process_tiles, write_slide_shard

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing.context import BaseContext


class LocalEngine:
    """Every core of this machine over the tiles of all slides (`workers=1`: a plain loop).

    Workers read, check and encode tiles; this process assembles them into shards in spec
    order and writes them, so shards are identical whatever the workers are.

    Small and medium jobs (fewer than `min_pool_tiles` tiles, at most `max_thread_slides`
    slides) run on threads of this process: OpenSlide, OpenCV and libjpeg-turbo release the
    GIL, nothing has to start, and a small slide's pixels read for its tissue mask are reused
    for its tiles; on few cores threads beat the pool for such jobs (bench/bench_tiling.py
    measures both). Bigger jobs use a process pool (forkserver): memory stays per worker and
    Python work never contends for one GIL on many cores.
    """

    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        batch_tiles: int = 64,
        progress: bool = True,
        min_pool_tiles: int = 20_000,
        max_thread_slides: int = 32,
    ):
        self.workers = workers or os.cpu_count() or 1
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.batch_tiles = batch_tiles
        self.progress = progress
        self.min_pool_tiles = min_pool_tiles
        self.max_thread_slides = max_thread_slides
        self.pool_started = False
        self._pool: ProcessPoolExecutor | None = None

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
        ctx: BaseContext
        if "forkserver" in mp.get_all_start_methods():
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["histoflow.tiling.local"])
        else:  # pragma: no cover - Windows
            ctx = mp.get_context("spawn")
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_worker_init, initargs=(in_memory_slides(), os.getpid())
        )
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
        batches = [specs[i : i + self.batch_tiles] for i in range(0, len(specs), self.batch_tiles)]
        with progress_bar(len(specs), "tiles", quiet=not self.progress) as bar:
            if self._pool is None and (self.workers < 2 or len(batches) < 2):
                for b in batches:
                    consume(b, *process_tiles(b, cfg))
                    bar.advance(len(b))
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
                        bar.advance(len(done_b))
                while window:
                    done_b, fut = window.popleft()
                    consume(done_b, *fut.result())
                    bar.advance(len(done_b))
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
        with progress_bar(len(specs), "tiles", quiet=not self.progress) as bar:
            for group in groups.values():
                # only called with the pool started (see extract)
                pending.add(cast("ProcessPoolExecutor", self._pool).submit(write_slide_shard, str(out), group, cfg))
                if len(pending) >= 2 * self.workers:  # bounded: the spec lists stay here until needed
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        stats = fut.result()
                        on_shard(stats)
                        bar.advance(stats["tiles"])
            for fut in wait(pending).done:
                stats = fut.result()
                on_shard(stats)
                bar.advance(stats["tiles"])


def _worker_init(in_memory: dict, driver_pid: int | None = None) -> None:
    if driver_pid is not None:
        die_with(driver_pid)
    add_in_memory(in_memory)  # in-memory slides travel once per worker, not once per tile
    try:
        import cv2

        cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe
    except ImportError:  # pragma: no cover
        pass


def die_with(driver_pid: int) -> None:
    """End this worker when the process that started the pool ends, however it ends.

    A pool worker blocks on its task queue, whose pipe every worker also holds open, so a
    driver killed with SIGKILL never sends the EOF that would end it: workers lived on,
    finished the queued tasks (writing shards for a run nobody waits for) and kept the
    forkserver (which ends when the last holder of its alive pipe does) and the resource
    tracker alive. A forkserver worker's parent is the forkserver, not the driver, so
    PR_SET_PDEATHSIG alone covers the forkserver's death; a thread waiting on a pidfd of the
    driver covers the driver's (polling os.kill where pidfds are missing).
    """
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl
            pass
    try:
        fd = os.pidfd_open(driver_pid)
    except ProcessLookupError:
        os._exit(1)  # the driver is already gone
    except (AttributeError, OSError):  # pragma: no cover - not Linux >= 5.3
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])  # readable once the driver has exited
        else:  # pragma: no cover
            while _alive(driver_pid):
                time.sleep(0.5)
        os._exit(1)  # no cleanup: a shard being written stays a temporary file, which a rerun ignores

    threading.Thread(target=watch, name="histoflow-die-with-driver", daemon=True).start()


def _alive(pid: int) -> bool:  # pragma: no cover - the fallback of die_with
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
