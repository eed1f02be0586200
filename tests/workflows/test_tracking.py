"""MLflow tracking: URI handling, up-front reachability checks, and real runs read back through
MLflow's client (a local SQLite store; a real `mlflow server` on 127.0.0.1 in the slow test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from histoflow.config import load_config
from histoflow.core.errors import ConfigError
from histoflow.workflows.tracking import final_metrics, flatten, resolve_uri
from tests.conftest import need_data
from tests.pg import free_port

mlflow = pytest.importorskip("mlflow")

TINY = {
    "name": "tracked",
    "data": {"image_px": 32, "max_per_split": 24, "num_workers": 0, "cache": "memory"},
    "model": {"name": "simple_cnn", "params": {"widths": [8, 16]}},
    "train": {"epochs": 2, "batch_size": 16, "scheduler": {"name": "cosine"}},
}


def tiny_config(tmp_path: Path, uri: str, **extra):
    raw = json.loads(json.dumps(TINY))
    raw["data"]["path"] = str(need_data("pcam"))
    raw["tracking"] = {"backend": "mlflow", "uri": uri, "experiment": "histoflow-tests"}
    raw.update(extra)
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_resolve_uri(tmp_path):
    uri, artifacts = resolve_uri(str(tmp_path / "mlruns"))
    assert uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlruns.db'}"  # never a file store: MLflow 3 refuses it
    assert artifacts == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert resolve_uri("http://127.0.0.1:5000") == ("http://127.0.0.1:5000", None)
    assert resolve_uri(f"sqlite:///{tmp_path}/x.db")[1] == (tmp_path / "artifacts").as_uri()


def test_flatten_and_final_metrics():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": "{}"}
    got = final_metrics({"epoch": 3, "val": {"auc": 0.9, "n": 10, "notes": ["x"], "tta": False}, "checkpoint": "p"})
    assert got == {"final_val_auc": 0.9, "final_val_n": 10.0, "best_epoch": 3.0}


def test_unreachable_server_stops_before_training(tmp_path):
    from histoflow.workflows.run import run

    cfg = tiny_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="MLflow server not reachable.*Training was not started"):
        run(cfg, tmp_path / "run")
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "run" / "history.csv").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_file_store_needs_the_env_var(tmp_path, monkeypatch):
    from histoflow.workflows.tracking import check_tracking

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_ALLOW_FILE_STORE"):
        check_tracking(tiny_config(tmp_path, (tmp_path / "fs").as_uri()))


def check_logged_run(uri: str, run_dir: Path, epochs: int) -> dict:
    """Read the run back through MLflow's client and compare it with the run folder."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert float(run.data.params["train.optimizer.lr"]) == pytest.approx(1e-3)
    assert run.data.params["model.params.widths"] == "[8, 16]"
    val_auc = client.get_metric_history(run_id, "val_auc")
    assert len(val_auc) == epochs  # one point per epoch
    history = __import__("pandas").read_csv(run_dir / "history.csv")
    assert [m.value for m in val_auc] == pytest.approx(history["val_auc"].tolist(), abs=1e-6)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["final_val_auc"] == pytest.approx(metrics["val"]["auc"])
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "metrics.json", "history.csv", "report", "checkpoints"} <= top
    if (run_dir / "report.html").exists():  # workflows.run writes it
        assert "report.html" in top
    assert "checkpoints/best.pt" in {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert any(a.path.endswith(".png") for a in client.list_artifacts(run_id, "report"))
    return {"client": client, "run_id": run_id}


def test_fit_logs_to_a_local_store(tmp_path):
    from histoflow.workflows.run import run

    cfg = tiny_config(tmp_path, str(tmp_path / "mlruns"))
    run_dir = run(cfg, tmp_path / "run")
    uri, _ = resolve_uri(str(tmp_path / "mlruns"))
    logged = check_logged_run(uri, run_dir, epochs=2)
    local = logged["client"].download_artifacts(logged["run_id"], "checkpoints/best.pt", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == (run_dir / "checkpoints" / "best.pt").read_bytes()
    assert (tmp_path / "mlruns" / "artifacts").is_dir()  # artifacts beside the store, not in the cwd


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts); ~10 s to answer."""
    port = free_port()
    log_path = tmp_path / "mlflow-server.log"
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{tmp_path / 'server.db'}",
                "--artifacts-destination",
                str(tmp_path / "server-artifacts"),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {log_path.read_text()[-800:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)  # the server's own process group: uvicorn workers included
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)


@pytest.mark.slow
def test_fit_and_tune_log_to_a_real_mlflow_server(tmp_path, mlflow_server):
    from histoflow.workflows.run import run
    from histoflow.workflows.tune.study import run_study

    cfg = tiny_config(tmp_path, mlflow_server)
    run_dir = run(cfg, tmp_path / "run")
    check_logged_run(mlflow_server, run_dir, epochs=2)
    assert list((tmp_path / "server-artifacts").rglob("best.pt"))  # uploaded through the server

    tuned = tiny_config(
        tmp_path,
        mlflow_server,
        tune={"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
        train={**TINY["train"], "epochs": 1},
    )
    result = run_study(tuned, tmp_path / "study", n_trials=2)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("histoflow-tests")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`histoflow.kind` = 'tune'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    parent = runs[0]
    assert parent.data.metrics["best_value"] == pytest.approx(result.best_value)
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert len(children) == 2
    assert {"trials.csv", "best.yaml", "plots"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_log_evaluation_folder(tmp_path):
    """`histoflow evaluate` output (metrics.json + report/) logged as its own run."""
    from histoflow.config import RunConfig
    from histoflow.workflows.tracking import log_evaluation

    out = tmp_path / "eval"
    (out / "report").mkdir(parents=True)
    (out / "report" / "roc_all.png").write_bytes(b"\x89PNG fake")
    results = {"checkpoint": "best.pt", "all": {"auc": 0.91, "n": 40}}
    (out / "metrics.json").write_text(json.dumps(results))
    cfg = RunConfig(tracking={"backend": "mlflow", "uri": str(tmp_path / "mlruns"), "experiment": "evals"})
    run_id = log_evaluation(cfg, out, results)
    client = mlflow.MlflowClient(tracking_uri=resolve_uri(str(tmp_path / "mlruns"))[0])
    run = client.get_run(run_id)
    assert run.data.metrics["final_all_auc"] == pytest.approx(0.91) and run.data.params["checkpoint"] == "best.pt"
    assert {"metrics.json", "report"} <= {a.path for a in client.list_artifacts(run_id)}
