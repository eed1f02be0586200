"""Run an Optuna study over a run config: each trial is one `fit` in `<out>/trials/trial_NNNN/`.

<out>/
  study.db          the default storage (SQLite): rerun the same command to resume after a crash
  trials/           one run folder per trial (config.yaml, checkpoints/, metrics.json, report/)
  trials.csv        one row per trial: number, state, value, params, duration, run folder
  best.yaml         the best trial's config, ready for `histoflow train best.yaml`
  best.json         best value, trial number and params; the baseline's value when it ran
  plots/            optimisation history, parameter importances, intermediate values (PNG; HTML with plotly)
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histoflow.config import RunConfig, save_config
from histoflow.core.errors import ConfigError, TrainingError
from histoflow.core.io import atomic_path, atomic_write_json
from histoflow.workflows.tune.space import SearchSpace, diff_signatures, parse_space

log = logging.getLogger(__name__)

SPACE_ATTR = "histoflow_search_space"
BASELINE_ATTR = "histoflow_baseline"
STORAGE_TIMEOUT_S = 5


@dataclass
class StudyResult:
    out: Path
    study_name: str
    storage: str
    n_complete: int
    n_pruned: int
    n_failed: int
    best_value: float | None
    best_trial: int | None
    best_params: dict[str, Any]
    baseline_value: float | None

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["out"] = str(self.out)
        d["storage"] = redact(self.storage)
        return d


def _optuna():
    from histoflow.core.optional import require

    return require("optuna", extra="tune")


def redact(url: str) -> str:
    """Hide a password in a database URL before it is logged or written."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def open_storage(url: str, timeout_s: float = STORAGE_TIMEOUT_S):
    """An Optuna RDBStorage, connected once up front with a short timeout: an unreachable
    database is a ConfigError before any training starts."""
    optuna = _optuna()
    from histoflow.workflows.tracking import connect_timeout_args

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        # concurrent writers (a second worker, optuna-dashboard) wait instead of failing with "database is locked"
        engine_kwargs = {"connect_args": {"timeout": 30}}
    else:
        engine_kwargs = {"connect_args": connect_timeout_args(url, timeout_s)}
    heartbeat = (
        {}
        if url.startswith("sqlite")
        else {
            # several machines on one study: a trial whose worker died is failed after the grace period
            "heartbeat_interval": 60,
            "grace_period": 300,
            "failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1),
        }
    )
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"--storage {redact(url)}: the database driver is not installed ({exc.name}); "
            f"pip install 'histoflow[postgres]' for PostgreSQL"
        ) from None
    except ImportError as exc:
        raise ConfigError(f"--storage {redact(url)}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - sqlalchemy/driver errors: unusable storage
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"--storage {redact(url)}: cannot open the study storage ({first}). Training was not started."
        ) from None


def make_sampler(space: SearchSpace, seed: int, n_trials: int = 12):
    optuna = _optuna()
    if space.settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # few trials: TPE's default of 10 random start-up trials would be most of a 12-trial study
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, n_trials // 3)))


def make_pruner(space: SearchSpace, epochs: int):
    optuna = _optuna()
    s = space.settings
    if s.pruner == "none":
        return optuna.pruners.NopPruner()
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs))
    return optuna.pruners.MedianPruner(n_startup_trials=s.startup_trials, n_warmup_steps=s.warmup_epochs)


def check_same_space(study, space: SearchSpace, storage_url: str) -> None:
    """A resumed study must search the same space: different spaces make its trials incomparable."""
    current = space.signature()
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        if study.trials:
            log.warning("study %s has trials but no recorded search space; recording the current one", study.study_name)
        study.set_user_attr(SPACE_ATTR, current)
        return
    changes = diff_signatures(stored, current)
    if changes:
        raise ConfigError(
            f"study {study.study_name!r} in {redact(storage_url)} was created with a different search space:\n  "
            + "\n  ".join(changes)
            + "\nresume it with the original tune: section, or start a new study (--study NAME or another --out)"
        )


def _fail_stale(study, out: Path) -> None:
    """The default SQLite store belongs to one run folder and one process: a RUNNING trial
    there is what a crash left behind. Mark it failed so its budget is spent again."""
    optuna = _optuna()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        log.warning("trial %d was left running by an interrupted study; marking it failed", t.number)
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def objective_value(run_dir: Path, metric: str) -> float:
    """The trial's value: the evaluation of its best checkpoint on the validation data
    (the same figure `histoflow train` prints), or the lowest val_loss of its history."""
    metrics_path = run_dir / "metrics.json"
    if metric == "val_loss":
        import pandas as pd

        history = pd.read_csv(run_dir / "history.csv")
        return float(history["val_loss"].min())
    results = json.loads(metrics_path.read_text())
    if "val" not in results:
        raise ConfigError(
            f"{run_dir}: no validation data, so {metric} cannot be optimised; "
            f"give the data a val split (data.split.val_fraction)"
        )
    value = results["val"]["auc" if metric == "val_auc" else "accuracy"]
    if value is None or not math.isfinite(value):
        raise TrainingError(f"{run_dir}: {metric} is {value}")
    return float(value)


def pruning_callback(trial, monitor: str):
    """optuna_integration's Lightning pruning callback, raising at the end of the epoch.

    The stock callback raises TrialPruned in on_validation_end, before the epoch's history.csv
    row and last.pt are written; deferring the raise to on_train_epoch_end (it runs after
    histoflow's callbacks) keeps a pruned trial's run folder a true record of what it did.
    """
    optuna = _optuna()
    from optuna_integration import PyTorchLightningPruningCallback

    class EpochEndPruning(PyTorchLightningPruningCallback):
        pruned: Exception | None = None

        def on_validation_end(self, trainer, pl_module):
            try:
                super().on_validation_end(trainer, pl_module)
            except optuna.TrialPruned as exc:
                self.pruned = exc
                trainer.should_stop = True  # even if a later hook swallowed the raise below

        def on_train_epoch_end(self, trainer, pl_module):
            if self.pruned is not None:
                raise self.pruned

    return EpochEndPruning(trial, monitor=monitor)


def make_objective(cfg: RunConfig, space: SearchSpace, out: Path, quiet: bool = False):
    optuna = _optuna()
    from histoflow.workflows.run import run

    def objective(trial) -> float:
        values = space.sample(trial)
        name = f"{cfg.name}-trial{trial.number:04d}"
        trial_cfg = space.apply(cfg, values, name=name)
        run_dir = out / "trials" / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        log.info("trial %d: %s", trial.number, values)
        pruning = pruning_callback(trial, space.settings.metric)
        try:
            run(trial_cfg, run_dir, callbacks=[pruning], quiet=quiet)
        except optuna.TrialPruned:
            if trial_cfg.tracking.backend != "none":
                from histoflow.workflows.tracking import mark_run

                mark_run(run_dir, "KILLED", {"optuna.state": "PRUNED"})
            raise
        return objective_value(run_dir, space.settings.metric)

    return objective


def run_study(
    cfg: RunConfig,
    out: str | Path,
    n_trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    source: str = "config",
    quiet: bool = False,
) -> StudyResult:
    """Search `cfg.tune` with Optuna; resumable: the same call continues an interrupted study
    until `n_trials` trials have completed or been pruned. `quiet` drops the trials' progress bars."""
    optuna = _optuna()
    space = parse_space(cfg.tune, cfg, source)
    n_trials = n_trials or space.settings.trials
    if not n_trials or n_trials < 1:
        raise ConfigError("--trials: give the number of trials (>= 1), or tune.trials in the config")
    if cfg.tracking.backend != "none":
        from histoflow.workflows.tracking import check_tracking

        check_tracking(cfg)  # before any training: an unreachable server fails now
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    default_storage = storage is None
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    rdb = open_storage(url)
    name = study_name or cfg.name
    study = optuna.create_study(
        study_name=name,
        storage=rdb,
        load_if_exists=True,
        direction=space.settings.direction,
        sampler=make_sampler(space, cfg.seed, n_trials),
        pruner=make_pruner(space, cfg.train.epochs),
    )
    check_same_space(study, space, url)
    if default_storage:
        _fail_stale(study, out)
    _enqueue_baseline(study, space, cfg)

    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=done_states))
    remaining = max(0, n_trials - done)
    log.info("study %s (%s): %d of %d trials done, %d to run", name, redact(url), done, n_trials, remaining)
    from histoflow.workflows.tracking import study_run

    with study_run(
        cfg, f"{name}-study", {"tune": space.signature(), "n_trials": n_trials, "study": name, "storage": redact(url)}
    ) as parent:
        if remaining:
            # MaxTrialsCallback stops every worker of a shared study once the total is reached
            callbacks = [
                optuna.study.MaxTrialsCallback(n_trials, states=done_states),
                lambda s, t: write_trials_table(s, out),
            ]
            study.optimize(
                make_objective(cfg, space, out, quiet),
                n_trials=remaining,
                catch=(TrainingError,),
                callbacks=callbacks,
                gc_after_trial=True,
            )
        result = write_outputs(study, space, cfg, out, url)
        if parent.run_id:
            _log_study(parent, result, out)
    return result


def _enqueue_baseline(study, space: SearchSpace, cfg: RunConfig) -> None:
    """Trial 0 of a new study trains the config's own values: the reference the search must beat."""
    if not space.settings.baseline or study.trials or BASELINE_ATTR in study.user_attrs:
        return
    values = space.baseline_values(cfg)
    if values is None:
        log.info("baseline not enqueued: the config's own values lie outside the search space")
        study.set_user_attr(BASELINE_ATTR, None)
        return
    study.enqueue_trial({p.key: p.to_optuna(values[p.key]) for p in space.params}, user_attrs={"baseline": True})
    study.set_user_attr(BASELINE_ATTR, values)


def write_trials_table(study, out: Path) -> Path:
    """trials.csv, rewritten after every trial (atomically) so it is current after a crash."""
    frame = study.trials_dataframe(
        attrs=("number", "state", "value", "params", "user_attrs", "duration", "datetime_start")
    )
    frame.columns = [c.replace("params_", "") for c in frame.columns]
    if "duration" in frame:
        frame["duration"] = frame["duration"].dt.total_seconds().round(1)
    with atomic_path(out / "trials.csv") as tmp:
        frame.to_csv(tmp, index=False)
    return out / "trials.csv"


def _baseline_value(study) -> float | None:
    for t in study.trials:
        if t.user_attrs.get("baseline") and t.value is not None:
            return float(t.value)
    return None


def write_outputs(study, space: SearchSpace, cfg: RunConfig, out: Path, url: str) -> StudyResult:
    optuna = _optuna()
    states = [t.state for t in study.trials]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    write_trials_table(study, out)
    best = None
    if complete:
        best = study.best_trial
        values = {p.key: p.decode(best.params[p.key]) for p in space.params}
        best_cfg = space.apply(cfg, values, name=f"{cfg.name}-best")
        save_config(best_cfg, out / "best.yaml")
    else:
        log.warning("no trial completed: no best.yaml written")
    result = StudyResult(
        out,
        study.study_name,
        url,
        complete,
        states.count(optuna.trial.TrialState.PRUNED),
        states.count(optuna.trial.TrialState.FAIL),
        best.value if best else None,
        best.number if best else None,
        {p.key: p.decode(best.params[p.key]) for p in space.params} if best else {},
        _baseline_value(study),
    )
    atomic_write_json(
        out / "best.json",
        {
            **result.as_dict(),
            "metric": space.settings.metric,
            "direction": space.settings.direction,
            "best_run_dir": best.user_attrs.get("run_dir") if best else None,
        },
    )
    from histoflow.workflows.tune.plots import write_plots

    write_plots(study, out / "plots")
    return result


def _log_study(parent, result: StudyResult, out: Path) -> None:
    client, run_id = parent.client, parent.run_id
    if result.best_value is not None:
        client.log_metric(run_id, "best_value", result.best_value)
    if result.baseline_value is not None:
        client.log_metric(run_id, "baseline_value", result.baseline_value)
    for key, value in (("n_complete", result.n_complete), ("n_pruned", result.n_pruned), ("n_failed", result.n_failed)):
        client.log_metric(run_id, key, value)
    for name in ("trials.csv", "best.yaml", "best.json"):
        if (out / name).exists():
            client.log_artifact(run_id, str(out / name))
    if (out / "plots").is_dir():
        client.log_artifacts(run_id, str(out / "plots"), artifact_path="plots")
