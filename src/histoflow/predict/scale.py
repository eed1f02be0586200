"""Many slides on many devices: one process per device, or one Spark task per slide.

The per-slide functions (predict_slide, embed_slide, detect_slide) already write each slide's
outputs atomically under OUT/<slide_id>/ with a completion marker written last, and skip a slide
whose marker matches. So a slide is a safe unit of work for any worker that can write OUT:

- `each_slide`: every slide in turn in this process (the local run).
- `run_processes`: one worker process per device (`--devices 0,1`, `--devices cpu,cpu`), each
  loading the model once and taking slides from a shared queue; a worker that dies mid-slide
  leaves that slide without its marker, reported failed, and a rerun completes it.
- `run_spark`: one Spark task per slide. Each executor's Python worker loads the model once (a
  cache keyed by job and device; Spark reuses Python workers, so not once per slide) and runs
  the slide itself, writing to OUT: a path every executor can write (local disk for local[*],
  a shared filesystem on a cluster). The driver collects only the small per-slide reports. A
  task that fails (a lost executor, a killed worker) is retried by Spark; the retry redoes the
  slide from scratch and replaces its files atomically, so nothing is duplicated.

Whatever the engine, the caller gets `(reports by slide id, errors by slide)`, as from
`each_slide`, and writes the same summary files. GPUs on Spark come from Spark's task resources
(`spark_gpu_conf`, `task_device`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import queue
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histoflow.core.errors import ConfigError, HistoflowError

__all__ = [
    "InjectedFault",
    "ScaleOut",
    "SlideJob",
    "each_slide",
    "parse_devices",
    "run_slides",
    "spark_gpu_conf",
    "task_device",
]
log = logging.getLogger(__name__)
ENGINES = ("local", "spark")
DISCOVERY_SCRIPT = Path(__file__).with_name("gpu_discovery.sh")


def each_slide(slides: Sequence[str | Path], one_slide: Callable[[str | Path], dict]) -> tuple[dict, dict]:
    """Run `one_slide` on every slide: (reports by slide id, errors by slide). A slide that fails,
    by raising a HistoflowError or by reporting status `failed`, is recorded, never fatal."""
    reports: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for path in slides:
        try:
            rep = one_slide(path)
        except HistoflowError as exc:
            log.error("%s", exc)
            failed[str(path)] = str(exc)
            continue
        reports[rep["slide_id"]] = rep
        if rep.get("status") == "failed":
            failed[rep["slide_id"]] = rep["error"]
    return reports, failed


@dataclass(frozen=True)
class SlideJob:
    """What a worker needs, picklable (module-level functions and partials, plain values):
    `load(device=...)` returns the loaded model(s), `run(loaded, slide_path, **run_kwargs)` does
    one slide and returns its report. `device`: the device asked for (`--device`), used where
    no device is handed out (a Spark task without a GPU; None there means cpu)."""

    load: Callable[..., Any]
    run: Callable[..., dict]
    run_kwargs: dict = field(default_factory=dict)
    device: str | None = None

    def key(self) -> str:
        return hashlib.sha1(pickle.dumps((self.load, self.run, sorted(self.run_kwargs.items())))).hexdigest()

    def runner(self, loaded) -> Callable[[str | Path], dict]:
        return lambda path: self.run(loaded, path, **self.run_kwargs)


@dataclass(frozen=True)
class InjectedFault:
    """Test hook: on the first attempt at `slide_id`, the worker process dies `after_s` seconds
    into the slide (os._exit: what a lost executor or an OOM kill looks like from the slide's
    side), or raises at once (`how="raise"`: a failed task). Later attempts run normally."""

    slide_id: str
    how: str = "exit"  # exit | raise
    after_s: float = 0.5

    def arm(self, path: str, attempt: int):
        """A timer to cancel when the slide ends, or None; raises for how='raise'."""
        from histoflow.tiling.readers import slide_id_for

        if attempt > 0 or slide_id_for(path) != self.slide_id:
            return None
        if self.how == "raise":
            raise RuntimeError(f"injected fault: {self.slide_id}, attempt {attempt}")
        import threading

        timer = threading.Timer(self.after_s, os._exit, (17,))
        timer.daemon = True
        timer.start()
        return timer


@dataclass(frozen=True)
class ScaleOut:
    """Where slides run. engine local: in this process, or one worker process per entry of
    `devices` when there are several; spark: one task per slide on `spark_master`, with
    `devices` GPUs per executor when they name GPUs (cuda indices)."""

    engine: str = "local"
    spark_master: str = "local[*]"
    devices: tuple[str, ...] = ()
    fault: InjectedFault | None = None  # tests only

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")

    @property
    def spread(self) -> bool:
        """True when slides leave this process."""
        return self.engine == "spark" or len(self.devices) > 1

    def here_device(self, fallback: str | None = None) -> str | None:
        """The device of a run that stays in this process: the one --devices names, else
        `fallback` (the --device); "cpu" when spread, where this process only checks settings."""
        if self.spread:
            return "cpu"
        return self.devices[0] if self.devices else fallback

    @property
    def gpus(self) -> int:
        return sum(d.startswith("cuda") for d in self.devices)

    def describe(self) -> str:
        if self.engine == "spark":
            return f"spark {self.spark_master}" + (f", {self.gpus} GPU(s) per executor" if self.gpus else "")
        return ",".join(self.devices)


def parse_devices(text: str | None) -> tuple[str, ...]:
    """`--devices`: "2" -> cuda:0, cuda:1; "0,1" or "cuda:0,cuda:1" -> those GPUs; "cpu,cpu" -> two
    CPU workers (tests, or several model copies on a many-core machine); "" or None -> ()."""
    if text is None or not str(text).strip():
        return ()
    text = str(text).strip()
    if text.isdigit():
        n = int(text)
        if n < 1:
            raise ConfigError(f"--devices {text}: give at least 1 device")
        return tuple(f"cuda:{i}" for i in range(n))
    out = []
    for part in (p.strip() for p in text.split(",")):
        if part.isdigit():
            out.append(f"cuda:{part}")
        elif part == "cpu" or re.fullmatch(r"cuda:\d+", part):
            out.append(part)
        else:
            raise ConfigError(
                f"--devices {text}: {part!r} is not a device; expected a count (2), GPU indices (0,1), "
                "cuda:N or cpu entries"
            )
    return tuple(out)


def task_device(resources: Mapping[str, Sequence[str]], fallback: str | None = None) -> str:
    """The torch device of a Spark task: the first GPU Spark assigned it (TaskContext
    resources()['gpu'].addresses, as a name -> addresses mapping), else `fallback` (else cpu)."""
    gpus = [a for a in resources.get("gpu", ()) if str(a).strip()]
    if gpus:
        return f"cuda:{str(gpus[0]).strip()}"
    return fallback or "cpu"


def spark_gpu_conf(gpus_per_executor: int, script: str | Path = DISCOVERY_SCRIPT) -> dict[str, str]:
    """Spark settings for GPU executors: each executor offers `gpus_per_executor` GPUs found by the
    discovery script, each task takes one (so one slide per GPU at a time)."""
    if gpus_per_executor < 1:
        return {}
    return {
        "spark.executor.resource.gpu.amount": str(gpus_per_executor),
        "spark.executor.resource.gpu.discoveryScript": str(script),
        "spark.task.resource.gpu.amount": "1",
    }


def run_slides(
    job: SlideJob, slides: Sequence[str | Path], scale: ScaleOut, progress: bool = True
) -> tuple[dict, dict]:
    """Every slide through `job` on the engine and devices of `scale`: what `each_slide` returns."""
    from histoflow.tiling.readers import in_memory_slide

    if not scale.spread:
        loaded = job.load(device=scale.here_device(job.device))
        return each_slide(slides, job.runner(loaded))
    memory = [str(s) for s in slides if in_memory_slide(str(s)) is not None]
    if memory:
        raise ConfigError(
            f"in-memory slides exist only in this process; they cannot run on {scale.describe()}: {memory[:3]}"
        )
    paths = [str(s) for s in slides]
    if scale.engine == "spark":
        return run_spark(job, paths, scale)
    return run_processes(job, paths, scale.devices, progress=progress, fault=scale.fault)


def _merge(slides: Sequence[str], results: dict[int, tuple[dict, dict]]) -> tuple[dict, dict]:
    """Per-slide results in the order of `slides`, as one each_slide answer."""
    reports: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for i in range(len(slides)):
        rep, err = results[i]
        reports.update(rep)
        failed.update(err)
    return reports, failed


# -- one process per device -----------------------------------------------------------------------------
def _process_main(job: SlideJob, device: str, threads: int, todo, done, fault: InjectedFault | None) -> None:
    """A worker process: load the model once on `device`, then take slides until the sentinel."""
    import traceback

    if device == "cpu":
        import torch

        torch.set_num_threads(threads)  # the CPU workers share the cores instead of each taking all
    try:
        run = job.runner(job.load(device=device))
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it there
        done.put(("load_failed", device, f"{type(exc).__name__}: {exc}"))
        return
    while (item := todo.get()) is not None:
        i, path = item
        done.put(("start", os.getpid(), i))
        timer = fault.arm(path, 0) if fault is not None else None
        try:
            result = each_slide([path], run)
        except Exception as exc:  # noqa: BLE001 - a bug: the parent raises it after the others finish
            done.put(("bug", os.getpid(), i, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
            continue
        finally:
            if timer is not None:
                timer.cancel()
        done.put(("done", os.getpid(), i, result))


def run_processes(
    job: SlideJob,
    slides: Sequence[str],
    devices: Sequence[str],
    progress: bool = True,
    fault: InjectedFault | None = None,
) -> tuple[dict, dict]:
    """One spawned worker process per device, slides handed out from a shared queue (a fast
    worker takes more). A worker that dies mid-slide: that slide is reported failed (its marker
    was never written, so a rerun redoes it); the other workers carry on with the rest."""
    import multiprocessing as mp

    from histoflow.core.progress import progress_bar

    if not slides:
        return {}, {}
    ctx = mp.get_context("spawn")  # CUDA cannot be forked; spawn also gives each worker a clean torch
    todo, done = ctx.Queue(), ctx.Queue()
    todo.cancel_join_thread()  # sentinels of workers that died stay unread: never wait on them at exit
    for i, path in enumerate(slides):
        todo.put((i, path))
    n_workers = min(len(devices), max(1, len(slides)))
    for _ in range(n_workers):
        todo.put(None)
    n_cpu = sum(d == "cpu" for d in devices[:n_workers])
    threads = max(1, (os.cpu_count() or 1) // max(1, n_cpu))
    procs = {}
    for device in devices[:n_workers]:
        p = ctx.Process(
            target=_process_main, args=(job, device, threads, todo, done, fault), name=f"histoflow-{device}"
        )
        p.start()
        procs[p.pid] = (p, device)
    results: dict[int, tuple[dict, dict]] = {}
    running: dict[int, int] = {}  # worker pid -> slide index
    bugs, load_errors = [], []
    alive = set(procs)
    try:
        with progress_bar(
            len(slides), f"slides on {','.join(devices[:n_workers])}", quiet=not progress, unit="slides"
        ) as bar:
            while len(results) < len(slides) and alive:
                try:
                    msg = done.get(timeout=0.5)
                except queue.Empty:
                    for pid in [p for p in alive if not procs[p][0].is_alive()]:
                        alive.discard(pid)
                        proc, device = procs[pid]
                        if pid in running:
                            i = running.pop(pid)
                            results[i] = (
                                {},
                                {
                                    slides[i]: f"the worker process on {device} died (exit code {proc.exitcode}) "
                                    "while running this slide; its outputs are incomplete: rerun to complete it"
                                },
                            )
                            bar.advance()
                    continue
                kind, who = msg[0], msg[1]
                if kind == "load_failed":
                    load_errors.append(f"{who}: {msg[2]}")
                elif kind == "start":
                    running[who] = msg[2]
                elif kind in ("done", "bug"):
                    running.pop(who, None)
                    i = msg[2]
                    if kind == "done":
                        results[i] = msg[3]
                    else:
                        bugs.append(f"{slides[i]}: {msg[3]}")
                        results[i] = ({}, {slides[i]: msg[3].splitlines()[0]})
                    bar.advance()
    finally:
        for proc, _ in procs.values():
            proc.join(timeout=5 if len(results) == len(slides) else 0.1)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    if bugs:
        raise RuntimeError(f"{len(bugs)} slide(s) hit a bug in a worker process; first: {bugs[0]}")
    if load_errors and not results:
        raise HistoflowError(f"no worker process could load the model: {'; '.join(load_errors)}")
    for i, path in enumerate(slides):  # left in the queue when every worker had died
        results.setdefault(i, ({}, {path: "not run: every worker process died or failed to load (see the log)"}))
    return _merge(slides, results)


# -- Spark: one task per slide ----------------------------------------------------------------------------
_LOADED: dict[tuple[str, str], Any] = {}  # per executor Python worker: (job key, device) -> loaded model


def _loaded(job: SlideJob, device: str):
    key = (job.key(), device)
    if key not in _LOADED:
        _LOADED.clear()  # one model per Python worker: a new job's replaces the last
        _LOADED[key] = job.load(device=device)
    return _LOADED[key]


def _spark_task(job: SlideJob, fault: InjectedFault | None, items) -> list:
    """The body of one Spark task (one partition: one slide)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    resources = {name: list(info.addresses) for name, info in ctx.resources().items()} if ctx else {}
    attempt = ctx.attemptNumber() if ctx else 0
    device = task_device(resources, job.device)
    run = job.runner(_loaded(job, device))
    out = []
    for i, path in items:
        timer = fault.arm(path, attempt) if fault is not None else None
        try:
            out.append((i, each_slide([path], run), {"device": device, "attempt": attempt, "pid": os.getpid()}))
        finally:
            if timer is not None:
                timer.cancel()
    return out


def run_spark(job: SlideJob, slides: Sequence[str], scale: ScaleOut) -> tuple[dict, dict]:
    """One Spark task per slide; the driver collects the per-slide reports (small dicts)."""
    from functools import partial

    from histoflow.tiling.spark import SparkEngine

    if not slides:
        return {}, {}
    conf = spark_gpu_conf(scale.gpus)
    with SparkEngine(scale.spark_master, conf=conf) as engine:
        sc = engine.spark.sparkContext
        if conf and sc.getConf().get("spark.task.resource.gpu.amount") is None:
            log.warning("the running Spark session has no GPU task resources; its tasks run on %s", job.device or "cpu")
        rdd = sc.parallelize(list(enumerate(slides)), len(slides))
        collected = rdd.mapPartitions(partial(_spark_task, job, scale.fault)).collect()
    results = {}
    for i, result, where in collected:
        results[i] = result
        if where["attempt"]:
            log.info("%s: done on attempt %d", slides[i], where["attempt"] + 1)
    return _merge(slides, results)
