"""`histoflow tune CONFIG --trials N`: Optuna search over the config's `tune:` section.

Registered on the main app by `register(app)`; the work is in histoflow.tune.study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = """Search hyper-parameters with Optuna (TPE sampler, median/Hyperband pruning on val_auc).

The search space is the config's `tune:` section, keyed by full dotted config keys:

  tune:
    train.optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
    train.batch_size: [64, 128]
    model.params: [{widths: [16, 32]}, {widths: [32, 64]}]
    pruner: median          # median | hyperband | none
    sampler: tpe            # tpe | random (seeded by the config's seed)

Rerun the same command to resume an interrupted study. Writes trials.csv, best.yaml (ready for
`histoflow train`), best.json and plots/ in the output folder.
"""


def register(app: typer.Typer) -> None:
    @app.command("tune", help=HELP)
    def tune(
        config: Path = typer.Argument(..., help="Run config YAML with a tune: section."),
        trials: Optional[int] = typer.Option(None, "--trials", help="Trials in total (completed + pruned) [default: tune.trials]."),
        storage: Optional[str] = typer.Option(None, help="Optuna storage URL, e.g. postgresql://user:pw@host/db "
                                                         "[default: sqlite in the output folder]."),
        study: Optional[str] = typer.Option(None, help="Study name [default: the config's name]."),
        out: Optional[Path] = typer.Option(None, help="Output folder [default: runs/<name>-tune]."),
        set_: list[str] = typer.Option(None, "--set", help="Override a config value: --set train.epochs=3 (repeatable)."),
    ) -> None:
        from histoflow.cli import console, run_verb
        from histoflow.config import load_config
        from histoflow.tune.study import run_study

        def work():
            import os

            if os.environ.get("HISTOFLOW_QUIET"):
                import optuna  # its per-trial INFO lines are progress output: --quiet silences them too

                optuna.logging.set_verbosity(optuna.logging.WARNING)
            cfg = load_config(config, list(set_ or []))
            folder = out or Path("runs") / f"{cfg.name}-tune"
            return run_study(cfg, folder, n_trials=trials, storage=storage, study_name=study, source=str(config))

        result = run_verb(work)
        console.print(f"trials: {result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed",
                      highlight=False)
        if result.best_value is not None:
            console.print(f"best: trial {result.best_trial}, value {result.best_value:.4f}, params {result.best_params}",
                          highlight=False, markup=False)
        if result.baseline_value is not None:
            console.print(f"baseline (the config's own values): {result.baseline_value:.4f}", highlight=False)
        console.print(f"output folder: {result.out} (best.yaml, trials.csv, plots/)", highlight=False)
