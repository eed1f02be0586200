"""`run(config, out)`: one complete run, fit -> evaluate -> report -> tracking.

This is what `histoflow train`, the demo and every tune trial do. The run folder gets, beside
what `fit` writes (config.yaml, splits.csv, checkpoints/, history.csv, tb/):
  metrics.json    evaluation of the best checkpoint on val (and test) data
  predictions_<split>.csv, report/*.png
  report.html     with the explain/ Grad-CAM gallery
and, when `tracking.backend` is not "none", an MLflow run with per-epoch and final metrics.
"""

from __future__ import annotations

from pathlib import Path

from histoflow.config import RunConfig


def run(
    cfg: RunConfig,
    out: str | Path,
    resume: bool = False,
    quiet: bool = False,
    callbacks: list | None = None,
    loggers: list | None = None,
    manifest=None,
) -> Path:
    """Train, evaluate, report and track per `cfg` into folder `out`; returns the run folder.

    `callbacks` / `loggers`: extra Lightning callbacks and loggers, passed to `fit`; `manifest`:
    the images to use instead of `cfg.data.path` (a `read_manifest` result), as in `fit`.
    """
    from histoflow.evaluate.run import evaluate_run
    from histoflow.train.fit import fit_run
    from histoflow.workflows.report import build_report

    tracked = cfg.tracking.backend != "none"
    make_loggers = None
    if tracked:  # an unreachable tracking server fails before any work
        from histoflow.workflows.tracking import check_tracking, tracking_loggers

        check_tracking(cfg)
        make_loggers = tracking_loggers
    fitted = fit_run(
        cfg,
        out,
        resume=resume,
        callbacks=callbacks,
        loggers=loggers,
        quiet=quiet,
        make_loggers=make_loggers,
        manifest=manifest,
    )
    run_dir = fitted.run_dir
    if not fitted.main_process:  # DDP: the other ranks stop after training
        return run_dir
    results = evaluate_run(run_dir, fitted.data, tta=cfg.train.tta, train_seconds=fitted.seconds)
    if fitted.notes:  # what training did unusually (e.g. selected on val_loss): in metrics.json too
        from histoflow.core.io import atomic_write_json

        notes = results.setdefault("notes", [])
        notes.extend(n for n in fitted.notes if n not in notes)
        atomic_write_json(run_dir / "metrics.json", results)
    build_report(run_dir)  # report.html, with the explain/ Grad-CAM gallery it makes first
    if tracked:
        from histoflow.workflows.tracking import finish_tracking

        finish_tracking(cfg, run_dir, results)
    return run_dir
