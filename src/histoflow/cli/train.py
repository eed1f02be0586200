"""`histoflow train` and `histoflow tune`: patch classifiers from a run config."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histoflow.cli.common import console, run_verb, state
from histoflow.core.errors import ConfigError
from histoflow.workflows.display import print_metrics

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
    @app.command()
    def train(
        config: Optional[Path] = typer.Argument(
            None, help="Run config YAML (defaults apply to anything it leaves out)."
        ),
        set_: list[str] = typer.Option(
            None, "--set", help="Override a config value: --set train.epochs=3 (repeatable)."
        ),
        out: Optional[Path] = typer.Option(None, help="Run folder [default: runs/<name>]."),
        resume: bool = typer.Option(False, help="Continue an interrupted run from its last checkpoint."),
        devices: Optional[str] = typer.Option(None, help="Number of devices (e.g. 2 GPUs)."),
        strategy: Optional[str] = typer.Option(None, help="Lightning strategy, e.g. ddp."),
    ) -> None:
        """Train a patch classifier; writes config.yaml, checkpoints/, history.csv, metrics.json."""
        from histoflow.config import load_config
        from histoflow.workflows.run import run

        overrides = list(set_ or [])
        if devices:
            overrides.append(f"train.devices={devices}")
        if strategy:
            overrides.append(f"train.strategy={strategy}")

        def work():
            cfg_path = config
            if resume and cfg_path is None:
                if out is None:
                    raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
                cfg_path = out / "config.yaml"  # continue with exactly what ran
            cfg = load_config(cfg_path, overrides)
            run_dir = out or Path("runs") / cfg.name
            run(cfg, run_dir, resume=resume, quiet=state.quiet)
            return run_dir

        run_dir = run_verb(work)
        if not state.quiet:  # --quiet: nothing but warnings and errors; the results are in the run folder
            print_metrics(console, run_dir / "metrics.json")
            console.print(f"run folder: {run_dir}")

    @app.command("tune", help=HELP)
    def tune(
        config: Path = typer.Argument(..., help="Run config YAML with a tune: section."),
        trials: Optional[int] = typer.Option(
            None, "--trials", help="Trials in total (completed + pruned) [default: tune.trials]."
        ),
        storage: Optional[str] = typer.Option(
            None, help="Optuna storage URL, e.g. postgresql://user:pw@host/db [default: sqlite in the output folder]."
        ),
        study: Optional[str] = typer.Option(None, help="Study name [default: the config's name]."),
        out: Optional[Path] = typer.Option(None, help="Output folder [default: runs/<name>-tune]."),
        set_: list[str] = typer.Option(
            None, "--set", help="Override a config value: --set train.epochs=3 (repeatable)."
        ),
    ) -> None:
        from histoflow.config import load_config
        from histoflow.workflows.tune.study import run_study

        def work():
            if state.quiet:
                import optuna  # its per-trial INFO lines are progress output: --quiet silences them too

                optuna.logging.set_verbosity(optuna.logging.WARNING)
            cfg = load_config(config, list(set_ or []))
            folder = out or Path("runs") / f"{cfg.name}-tune"
            return run_study(
                cfg, folder, n_trials=trials, storage=storage, study_name=study, source=str(config), quiet=state.quiet
            )

        result = run_verb(work)
        console.print(
            f"trials: {result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed", highlight=False
        )
        if result.best_value is not None:
            console.print(
                f"best: trial {result.best_trial}, value {result.best_value:.4f}, params {result.best_params}",
                highlight=False,
                markup=False,
            )
        if result.baseline_value is not None:
            console.print(f"baseline (the config's own values): {result.baseline_value:.4f}", highlight=False)
        console.print(f"output folder: {result.out} (best.yaml, trials.csv, plots/)", highlight=False)
