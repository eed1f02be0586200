"""Experiment tracking with MLflow: params, per-epoch metrics, final metrics, report and checkpoint.

`workflows.run.run` hands `tracking_loggers(cfg, run_dir)` to `fit` (built once the run folder is
ready) and calls `finish_tracking(cfg, run_dir, results)` after evaluation whenever
`tracking.backend` is not "none"; `histoflow tune` opens a parent run with `study_run(...)` so
every trial appears nested under its study.

Where runs go (`tracking.uri`):
- a plain path (the default `./mlruns`): an SQLite store `<path>/mlruns.db` with artifacts in
  `<path>/artifacts`. MLflow 3 refuses a plain file store unless MLFLOW_ALLOW_FILE_STORE=true,
  so a path is never handed to MLflow as a file store; browse it with
  `mlflow ui --backend-store-uri sqlite:///<path>/mlruns.db`.
- `file:///...`: MLflow's file store, only when MLFLOW_ALLOW_FILE_STORE=true is set.
- `sqlite:///...`, `postgresql://...`, `http(s)://host:port` (an `mlflow server`): as given.
Reachability is checked up front with a short timeout, so an unreachable server stops the run
before any training (not after the first epoch, and never silently).

Neptune, Weights & Biases, Comet: Lightning ships their loggers; pass them to
`run(cfg, out, loggers=[WandbLogger(...)])` after installing the client (not a histoflow extra).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from histoflow.core.errors import ConfigError
from histoflow.core.io import atomic_write_json

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0
_STATE_FILE = "tracking.json"  # run folder: the MLflow run id, so a resumed run logs to the same run
# The tune study's MLflow run: trials started inside `study_run` become its children.
_PARENT_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("histoflow_mlflow_parent", default=None)


def _mlflow():
    from histoflow.core.optional import require

    return require("mlflow", extra="track")


def resolve_uri(uri: str) -> tuple[str, str | None]:
    """(tracking URI for MLflow, artifact location for new experiments or None for the server's)."""
    if "://" not in uri and not uri.startswith("file:"):
        root = Path(uri).expanduser().resolve()
        return f"sqlite:///{root / 'mlruns.db'}", (root / "artifacts").as_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return uri, (db.parent / "artifacts").as_uri()
    return uri, None


def check_tracking(cfg, timeout_s: float = TIMEOUT_S) -> str:
    """Raise ConfigError unless `cfg.tracking` can be written; returns the resolved URI."""
    t = cfg.tracking
    if t.backend == "none":
        return ""
    if t.backend != "mlflow":  # pragma: no cover - the config's Literal forbids it
        raise ConfigError(f"tracking.backend: unknown backend {t.backend!r}")
    _mlflow()
    uri, _ = resolve_uri(t.uri)
    where = f"tracking.uri {t.uri!r}"
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as reply:  # noqa: S310 - user's own server
                if reply.status != 200:
                    raise ConfigError(f"{where}: {url} answered HTTP {reply.status}; is it an MLflow server?")
        except urllib.error.HTTPError as exc:
            raise ConfigError(
                f"{where}: {url} answered HTTP {exc.code} ({exc.reason}); is it an MLflow server "
                f"(or is a proxy answering for it)? Training was not started."
            ) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(
                f"{where}: MLflow server not reachable ({reason}) within {timeout_s:g} s; "
                f"start it (mlflow server --host ... --port ...) or fix tracking.uri. "
                f"Training was not started."
            ) from None
    elif uri.startswith("file:"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
            raise ConfigError(
                f"{where}: MLflow 3 refuses a plain file store; set MLFLOW_ALLOW_FILE_STORE=true, "
                f"or give a folder path (histoflow then uses an SQLite store in it)"
            )
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot create {db.parent} ({exc})") from None
    else:
        _check_database(uri, where, timeout_s)
    return uri


def _check_database(uri: str, where: str, timeout_s: float) -> None:
    """An RDBMS URL (postgresql://, mysql://): one connection with a short timeout."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_timeout_args(uri, timeout_s))
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{where}: the database driver is not installed ({exc.name}); "
            f"pip install 'histoflow[postgres]' for PostgreSQL"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any driver error means "cannot use this URL"
        raise ConfigError(f"{where}: cannot connect ({str(exc).splitlines()[0]}). Training was not started.") from None


def connect_timeout_args(uri: str, timeout_s: float) -> dict:
    """Driver options that bound the connection wait (drivers differ in the name)."""
    if uri.startswith("postgresql"):
        return {"connect_timeout": max(1, int(timeout_s))}
    if uri.startswith("mysql"):
        return {"connect_timeout": max(1, int(timeout_s))}
    return {}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"train.optimizer.lr": 0.001, ...} (MLflow params are flat)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out or ({prefix[:-1]: "{}"} if prefix else {})
    return {prefix[:-1]: tree}


def _ensure_experiment(client, name: str, artifact_location: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def tracking_loggers(cfg, run_dir: str | Path) -> list:
    """Lightning loggers for `cfg.tracking` (MLflow); logs the resolved config as params."""
    if cfg.tracking.backend == "none":
        return []
    from lightning.pytorch.loggers import MLFlowLogger

    mlflow = _mlflow()
    uri = check_tracking(cfg)
    _, artifacts = resolve_uri(cfg.tracking.uri)
    run_dir = Path(run_dir)
    client = mlflow.MlflowClient(tracking_uri=uri)
    _ensure_experiment(client, cfg.tracking.experiment, artifacts)
    state = _read_state(run_dir)
    tags = {"histoflow.run_dir": str(run_dir.resolve())}
    parent = _PARENT_RUN.get()
    if parent:
        tags["mlflow.parentRunId"] = parent
    logger = MLFlowLogger(
        experiment_name=cfg.tracking.experiment,
        run_name=cfg.name,
        tracking_uri=uri,
        tags=None if state.get("run_id") else tags,
        artifact_location=artifacts,
        run_id=state.get("run_id"),
        log_model=False,
    )
    if not state.get("run_id"):
        logger.log_hyperparams(flatten(cfg.model_dump(mode="json")))
        _write_state(run_dir, {"run_id": logger.run_id, "tracking_uri": uri, "experiment": cfg.tracking.experiment})
    log.info("MLflow run %s in %s (experiment %s)", logger.run_id, uri, cfg.tracking.experiment)
    return [logger]


def _read_state(run_dir: Path) -> dict:
    path = run_dir / _STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _write_state(run_dir: Path, state: dict) -> None:
    atomic_write_json(run_dir / _STATE_FILE, state)


def final_metrics(results: dict) -> dict[str, float]:
    """metrics.json -> {"final_val_auc": ..., "final_val_accuracy": ...}: scalars only."""
    out = {}
    for split, values in results.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"final_{split}_{key}"] = float(value)
    for key in ("train_seconds", "epoch"):
        if isinstance(results.get(key), (int, float)):
            out[key if key != "epoch" else "best_epoch"] = float(results[key])
    return out


def finish_tracking(cfg, run_dir: str | Path, results: dict) -> str | None:
    """After evaluation: final metrics, report, metrics/config/history and best checkpoint as artifacts."""
    if cfg.tracking.backend == "none":
        return None
    mlflow = _mlflow()
    run_dir = Path(run_dir)
    state = _read_state(run_dir)
    if not state.get("run_id"):
        log.warning("%s: no MLflow run recorded (%s missing); final metrics not logged", run_dir, _STATE_FILE)
        return None
    client = mlflow.MlflowClient(tracking_uri=state["tracking_uri"])
    run_id = state["run_id"]
    metrics = final_metrics(results)
    if metrics:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
    for name in ("config.yaml", "metrics.json", "history.csv", "splits.csv", "report.html"):
        if (run_dir / name).exists():
            client.log_artifact(run_id, str(run_dir / name))
    for folder in ("report", "explain"):  # plots; the Grad-CAM gallery report.html links to
        if (run_dir / folder).is_dir():
            client.log_artifacts(run_id, str(run_dir / folder), artifact_path=folder)
    if (run_dir / "checkpoints" / "best.pt").exists():
        client.log_artifact(run_id, str(run_dir / "checkpoints" / "best.pt"), artifact_path="checkpoints")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def mark_run(run_dir: str | Path, status: str, tags: dict[str, str] | None = None) -> None:
    """Set the status of a run folder's MLflow run (e.g. KILLED for a pruned trial)."""
    state = _read_state(Path(run_dir))
    if not state.get("run_id"):
        return
    client = _mlflow().MlflowClient(tracking_uri=state["tracking_uri"])
    for key, value in (tags or {}).items():
        client.set_tag(state["run_id"], key, value)
    client.set_terminated(state["run_id"], status)


@contextlib.contextmanager
def study_run(cfg, name: str, params: dict[str, Any]) -> Iterator[Any]:
    """A parent MLflow run for a tune study; runs started inside become its children.

    Yields an object with `.run_id` and `.client` (None, None when tracking is off).
    """

    class Handle:
        run_id = None
        client = None

    handle = Handle()
    if cfg.tracking.backend == "none":
        yield handle
        return
    mlflow = _mlflow()
    uri = check_tracking(cfg)
    _, artifacts = resolve_uri(cfg.tracking.uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = _ensure_experiment(client, cfg.tracking.experiment, artifacts)
    run = client.create_run(experiment_id, run_name=name, tags={"histoflow.kind": "tune"})
    for key, value in flatten(params).items():
        client.log_param(run.info.run_id, key, value)
    handle.run_id, handle.client = run.info.run_id, client
    token = _PARENT_RUN.set(run.info.run_id)
    status = "FAILED"
    try:
        yield handle
        status = "FINISHED"
    finally:
        _PARENT_RUN.reset(token)
        client.set_terminated(run.info.run_id, status)


def log_evaluation(cfg, out: str | Path, results: dict, run_name: str = "evaluate") -> str | None:
    """A standalone evaluation (`histoflow evaluate`'s output folder) as its own MLflow run:
    final metrics, metrics.json and the report plots. Returns the run id."""
    if cfg.tracking.backend == "none":
        return None
    mlflow = _mlflow()
    uri = check_tracking(cfg)
    _, artifacts = resolve_uri(cfg.tracking.uri)
    out = Path(out)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = _ensure_experiment(client, cfg.tracking.experiment, artifacts)
    run = client.create_run(
        experiment_id, run_name=run_name, tags={"histoflow.kind": "evaluate", "histoflow.run_dir": str(out.resolve())}
    )
    run_id = run.info.run_id
    if isinstance(results.get("checkpoint"), str):
        client.log_param(run_id, "checkpoint", results["checkpoint"])
    for key, value in final_metrics(results).items():
        client.log_metric(run_id, key, value)
    if (out / "metrics.json").exists():
        client.log_artifact(run_id, str(out / "metrics.json"))
    if (out / "report").is_dir():
        client.log_artifacts(run_id, str(out / "report"), artifact_path="report")
    client.set_terminated(run_id, "FINISHED")
    return run_id
