"""The Spark engine: the same pure functions as the local engine, mapped over RDDs.

Slides are planned on executors (one task per slide), then tasks of a few shards each read,
check and encode their tiles and write each shard themselves, straight to the output folder: pixels never
travel through the driver, which only collects small stats. `out` must therefore be a path
every executor can write (a local disk for local[*], a shared filesystem such as NFS on a
cluster). pyspark is imported here only, when this engine is used.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from histoflow.config.tiling import TileConfig
from histoflow.core.optional import require
from histoflow.tiling.plan import SlidePlan, plan_slide
from histoflow.tiling.work import write_slide_shard

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def spark_session(master: str = "local[*]", app_name: str = "histoflow-tile", conf: dict | None = None):
    """A SparkSession whose executors run this Python (else they lack openslide & co)."""
    require("pyspark", extra="spark")
    from pyspark.sql import SparkSession

    import histoflow.core as core  # the package's location, without importing the whole API

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
        # executors import histoflow from where this driver does (a source checkout too)
        .config("spark.executorEnv.PYTHONPATH", str(Path(core.__file__).resolve().parents[2]))
    )
    for k, v in (conf or {}).items():
        builder = builder.config(k, v)
    return builder.getOrCreate()


class SparkEngine:
    name = "spark"

    def __init__(self, master: str = "local[*]", session=None, conf: dict | None = None, tasks_per_core: int = 3):
        self.master = master
        self.tasks_per_core = tasks_per_core  # a few per core: stragglers even out, overhead stays small
        self._given = session
        self._conf = conf
        self.spark: SparkSession | None = None  # set while the engine is entered

    def __enter__(self):
        self._owned = False
        if self._given is None:
            require("pyspark", extra="spark")
            from pyspark.sql import SparkSession

            # getOrCreate would hand back a running session (a notebook's, a test's): use it,
            # but then it is not ours to stop
            self._given = SparkSession.getActiveSession()
            if self._given is not None and self.master not in ("local[*]", self._given.sparkContext.master):
                log.warning(
                    "a Spark session on %s is already running; using it instead of %s",
                    self._given.sparkContext.master,
                    self.master,
                )
        if self._given is None:
            self.spark, self._owned = spark_session(self.master, conf=self._conf), True
        else:
            self.spark = self._given
        return self

    def __exit__(self, *exc):
        if self._owned and self.spark is not None:
            self.spark.stop()
        self.spark = None

    def plan(self, paths: Sequence[str], cfg: TileConfig) -> list[SlidePlan]:
        sc = cast("SparkSession", self.spark).sparkContext  # engines are used entered
        return sc.parallelize(list(paths), max(1, len(paths))).map(lambda p: plan_slide(p, cfg)).collect()

    def extract(self, out: Path, plans: Sequence[SlidePlan], todo: dict, cfg: TileConfig, on_shard) -> None:
        tasks = []
        for plan in plans:
            wanted = todo.get(plan.slide_id, ())
            by_shard: dict[int, list] = {}
            for spec in plan.specs:
                if spec.shard in wanted:
                    by_shard.setdefault(spec.shard, []).append(spec)
            tasks += [by_shard[k] for k in sorted(by_shard)]
        if not tasks:
            return
        out_str = str(Path(out).resolve())
        sc = cast("SparkSession", self.spark).sparkContext  # engines are used entered
        # A shard stays the unit of output and resume (each is written atomically by one call),
        # but a Spark task carries several: with one task per shard, task overhead costs a
        # sizeable share of the throughput (bench/bench_tiling.py measures it).
        n_partitions = min(len(tasks), max(1, sc.defaultParallelism) * self.tasks_per_core)
        rdd = sc.parallelize(tasks, n_partitions).mapPartitions(
            lambda shards: [write_slide_shard(out_str, specs, cfg) for specs in shards]
        )
        # collect, not toLocalIterator: the latter runs one partition (one core) at a time
        for stats in rdd.collect():
            on_shard(stats)
