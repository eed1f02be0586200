"""Tile extraction: `extract_tiles`, the orchestration every engine shares.

The work is split so that the same functions run in a loop, a process pool or on Spark
(the CODAIT deep-histopath precedent): `plan_slide(path, cfg)` (tiling.plan) computes the
tissue mask and grid of one slide; `process_tiles(specs, cfg)` (tiling.work) reads, checks and
encodes tiles; `write_slide_shard(...)` writes one Parquet shard. Readers are opened lazily in
whichever process runs the work and cached there (tiling.readers), never pickled.

Orchestration is the same for every engine: skip complete slides (resume), plan the rest,
extract their shards, write a report per slide (failures included) and the manifest. Engines
differ only in how they map work: tiling.local.LocalEngine (threads or processes) or
tiling.spark.SparkEngine.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from histoflow.config.tiling import TileConfig
from histoflow.core.errors import ConfigError
from histoflow.core.io import atomic_write_bytes, atomic_write_json
from histoflow.core.version import __version__
from histoflow.tiling.local import LocalEngine
from histoflow.tiling.plan import SlidePlan
from histoflow.tiling.read import PIXELS_VERSION
from histoflow.tiling.readers import register_in_memory, slide_id_for
from histoflow.tiling.shards import shard_path, shard_stats, slide_dir, write_manifest

log = logging.getLogger(__name__)


class TilingEngine(Protocol):
    """What extract_tiles needs of an engine (LocalEngine, SparkEngine, or one passed in)."""

    name: str

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> None: ...

    def plan(self, paths: Sequence[str], cfg: TileConfig) -> list[SlidePlan]: ...

    def extract(
        self, out: Path, plans: Sequence[SlidePlan], todo: dict, cfg: TileConfig, on_shard: Callable[[dict], None]
    ) -> None: ...


def _slide_paths(slides: Iterable) -> list[str]:
    paths = []
    for s in slides:
        if hasattr(s, "read_region"):  # an in-memory slide object
            paths.append(register_in_memory(s))
        else:
            paths.append(str(s))
    return paths


def _pixels_version_of(record: dict) -> int:
    """The PIXELS_VERSION a config.json or report.json was written with (1: before it was recorded)."""
    return int(record.get("pixels_version", 1))


def _check_config(out: Path, cfg: TileConfig) -> None:
    path = out / "config.json"
    if path.exists():
        previous = json.loads(path.read_text())
        made_by = _pixels_version_of(previous)
        if made_by != PIXELS_VERSION:
            raise ConfigError(
                f"{out}: holds tiles made by another histoflow version whose resampling gives other pixels "
                f"(pixels version {made_by}, this one makes {PIXELS_VERSION}); resuming would mix "
                "the two: use a new --out folder"
            )
        if previous.get("fingerprint") != cfg.fingerprint():
            changed = sorted(k for k, v in cfg.to_dict().items() if previous.get("tile", {}).get(k) != v)
            raise ConfigError(
                f"{out}: holds tiles made with a different config (changed: {changed}); use a new --out folder"
            )
    else:
        atomic_write_json(
            path, {"fingerprint": cfg.fingerprint(), "pixels_version": PIXELS_VERSION, "tile": cfg.to_dict()}
        )


def _report_complete(out: Path, slide_id: str, cfg: TileConfig) -> bool:
    path = slide_dir(out, slide_id) / "report.json"
    if not path.exists():
        return False
    try:
        report = json.loads(path.read_text())
    except ValueError:
        return False
    return (
        report.get("status") == "complete"
        and report.get("fingerprint") == cfg.fingerprint()
        and _pixels_version_of(report) == PIXELS_VERSION
    )


def extract_tiles(
    slides: Iterable,
    out: str | Path,
    cfg: TileConfig | None = None,
    engine: str | TilingEngine = "local",
    workers: int | None = None,
    spark_master: str | None = None,
    progress: bool = True,
    pool_min_tiles: int | None = None,
) -> dict:
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
        engine = LocalEngine(workers=workers, progress=progress, **_given(min_pool_tiles=pool_min_tiles))
    elif engine == "spark":
        from histoflow.tiling.spark import SparkEngine

        engine = SparkEngine(master=spark_master or "local[*]")
    elif isinstance(engine, str):
        raise ConfigError(f"engine must be 'local' or 'spark', got {engine!r}")

    ids: dict[str, str] = {}
    for p in paths:
        sid = slide_id_for(p)
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
                atomic_write_bytes(d / "view.jpg", plan.view_jpg)
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
            report = _slide_report(
                plan,
                shard_results[plan.slide_id],
                cfg,
                finished.get(plan.slide_id, started[plan.slide_id]) - started[plan.slide_id],
            )
            atomic_write_json(slide_dir(out, plan.slide_id) / "report.json", report)
            reports[plan.slide_id] = report
            level = logging.INFO if report["status"] == "complete" else logging.ERROR
            log.log(
                level,
                "%s: %s, %d tiles kept%s",
                plan.slide_id,
                report["status"],
                report["kept"],
                f" ({report['error']})" if report.get("error") else "",
            )

    complete = [sid for sid in ids if sid in skipped or reports.get(sid, {}).get("status") == "complete"]
    write_manifest(out, complete)
    elapsed = time.perf_counter() - t0
    kept = sum(r["kept"] for r in reports.values())
    return {
        "out": str(out),
        "engine": engine.name,
        "slides": len(ids),
        "complete": len(complete),
        "skipped": skipped,
        "failed": sorted(sid for sid, r in reports.items() if r["status"] != "complete"),
        "tiles_kept": kept,
        "seconds": round(elapsed, 3),
        "tiles_per_s": round(kept / elapsed, 2) if elapsed > 0 else None,
        "reports": reports,
    }


def _given(**options) -> dict:
    return {k: v for k, v in options.items() if v is not None}


def _slide_report(plan: SlidePlan, shards: list[dict], cfg: TileConfig, extract_s: float) -> dict:
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
        warning = (
            f"{plan.slide_id}: no tile reaches the tissue threshold {cfg.tissue_threshold} "
            f"(tissue is {plan.tissue_fraction:.1%} of the slide view); no tiles written"
        )
        log.warning(warning)
    if error is None and plan.dark_background_note:  # logged by planning already
        warning = plan.dark_background_note + (f"; {warning.split(': ', 1)[1]}" if warning else "")
    return {
        "slide_id": plan.slide_id,
        "path": plan.path,
        "status": "failed" if error else "complete",
        "error": error,
        "warning": warning,
        "fingerprint": cfg.fingerprint(),
        "pixels_version": PIXELS_VERSION,
        "histoflow_version": __version__,
        "candidates": plan.n_candidates,
        "kept": sum(s.get("kept", 0) for s in shards if not s.get("failed")),
        "rejected": dict(sorted(rejected.items())),
        "tile_errors": errors[:20],
        "tissue_fraction": round(plan.tissue_fraction, 4),
        "pen_fraction": round(plan.pen_fraction, 4),
        "shards": len(shards) - len(failed_shards),
        "resumed_shards": sum(1 for s in shards if s.get("resumed")),
        "seconds": {"plan": plan.plan_s, "extract": round(extract_s, 3)},
        "worker_maxrss_mb": max((s.get("worker_maxrss_mb", 0) for s in shards), default=None),
        "slide": plan.info,
    }
