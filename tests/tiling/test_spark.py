"""The Spark engine gives exactly the local engine's output: local[2], and a real standalone cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from histoflow.slide.synthetic import write_synthetic_slide
from histoflow.tiling import TileConfig, extract_tiles
from tests.conftest import REPO, need_data

pytestmark = pytest.mark.spark
CFG = TileConfig(tile_px=128, mpp=1.0, tiles_per_shard=8)


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from histoflow.tiling.spark import spark_session

    session = spark_session("local[2]", conf={"spark.sql.shuffle.partitions": "2"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    pyr = write_synthetic_slide(
        tmp_path_factory.mktemp("pyr") / "pyr.tif", 3000, 2000, mpp=0.25, tile_px=256, min_level_px=600, seed=5
    )
    return [need_data("wsi", "cmu-1-small-region.svs"), pyr, pyr.parent / "missing.svs"]


def assert_same_output(a: Path, b: Path) -> None:
    """Same manifest (tile ids, coordinates, QC figures), same shards, same encoded pixels."""
    ma, mb = pq.read_table(a / "manifest.parquet"), pq.read_table(b / "manifest.parquet")
    assert ma.num_rows > 0 and ma.equals(mb)
    shards_a = sorted(p.relative_to(a) for p in a.glob("shards/*/*.parquet"))
    assert shards_a == sorted(p.relative_to(b) for p in b.glob("shards/*/*.parquet"))
    for rel in shards_a:
        ta, tb = pq.read_table(a / rel), pq.read_table(b / rel)
        assert ta.column("tile_id").equals(tb.column("tile_id")) and ta.column("image").equals(tb.column("image"))


def test_spark_local_matches_local_engine(spark, slides, tmp_path):
    from histoflow.tiling.spark import SparkEngine

    local = extract_tiles(slides, tmp_path / "local", CFG, workers=2, progress=False)
    # 1 task per core: local[2] runs 2 tasks, each carrying several of the 5 shards
    sp = extract_tiles(
        slides, tmp_path / "spark", CFG, engine=SparkEngine(session=spark, tasks_per_core=1), progress=False
    )
    assert sp["engine"] == "spark" and sp["tiles_kept"] == local["tiles_kept"] > 20
    assert sp["failed"] == local["failed"] == ["missing"]
    assert "missing.svs: slide file not found" in sp["reports"]["missing"]["error"]
    assert_same_output(tmp_path / "local", tmp_path / "spark")
    assert len(list((tmp_path / "spark").glob("shards/*/*.parquet"))) > 2
    for sid in ("cmu-1-small-region", "pyr"):
        r = json.loads((tmp_path / "spark" / "slides" / sid / "report.json").read_text())
        assert r["status"] == "complete" and r["worker_maxrss_mb"] < 1024
    # resume through Spark: nothing left to do for complete slides
    again = extract_tiles(slides, tmp_path / "spark", CFG, engine=SparkEngine(session=spark), progress=False)
    assert sorted(again["skipped"]) == ["cmu-1-small-region", "pyr"]
    # engine="spark" by name reuses the running session and leaves it running
    extract_tiles(slides[1:2], tmp_path / "byname", CFG, engine="spark", progress=False)
    assert spark.sparkContext._jsc is not None and spark.range(3).count() == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_workers(ui_port: int, timeout_s: float = 90) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
                if json.loads(r.read()).get("aliveworkers", 0) >= 1:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError("the standalone Spark worker did not register with the master")


@pytest.mark.slow
def test_standalone_cluster_master_and_worker(slides, tmp_path):
    """Start a real master and worker from pyspark's own launcher, tile through them, stop them."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    spark_class = spark_home / "bin" / "spark-class"
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    env = dict(
        os.environ,
        SPARK_HOME=str(spark_home),
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        PYTHONPATH=str(REPO / "src"),
        SPARK_LOG_DIR=str(tmp_path / "logs"),
        SPARK_WORKER_DIR=str(tmp_path / "work"),
    )
    logs = open(tmp_path / "cluster.log", "wb")
    master = subprocess.Popen(
        [
            str(spark_class),
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ],
        env=env,
        stdout=logs,
        stderr=logs,
    )
    worker = subprocess.Popen(
        [
            str(spark_class),
            "org.apache.spark.deploy.worker.Worker",
            f"spark://127.0.0.1:{port}",
            "--host",
            "127.0.0.1",
            "--cores",
            "2",
            "--memory",
            "2g",
            "--webui-port",
            str(worker_ui),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        env=env,
        stdout=logs,
        stderr=logs,
    )
    try:
        _wait_for_workers(ui)
        # a separate driver process: this test module's local[2] session must not be replaced
        script = textwrap.dedent(f"""
            import json, sys
            from histoflow.tiling import TileConfig, extract_tiles
            cfg = TileConfig(**{CFG.to_dict()!r})
            s = extract_tiles({[str(p) for p in slides]!r}, {str(tmp_path / "cluster")!r}, cfg, engine="spark",
                              spark_master="spark://127.0.0.1:{port}", progress=False)
            print(json.dumps({{"kept": s["tiles_kept"], "failed": s["failed"]}}))
        """)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["failed"] == ["missing"] and result["kept"] > 20
        extract_tiles(slides, tmp_path / "local", CFG, workers=2, progress=False)
        assert_same_output(tmp_path / "local", tmp_path / "cluster")
    finally:
        for proc in (worker, master):  # only the processes this test started, by their handles
            proc.terminate()
        for proc in (worker, master):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()
