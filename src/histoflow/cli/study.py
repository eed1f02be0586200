"""`histoflow study`: a whole-slide study from one YAML (slides + labels -> slide-level results)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histoflow.cli.common import console, run_verb, set_option, state


def register(app: typer.Typer) -> None:
    @app.command()
    def study(
        config: Path = typer.Argument(..., help="Study YAML (see configs/study_pcam_cohort.yaml)."),
        out: Optional[Path] = typer.Option(None, help="Study folder [default: runs/<name>]."),
        set_: Optional[list[str]] = set_option("tile_model.set=[train.epochs=2]"),
    ) -> None:
        """Tile slides, train a tile classifier and attention MIL, evaluate both on held-out slides.

        Re-running resumes an interrupted study and skips stages that are done with the same
        settings; changing a setting redoes only the stages that depend on it."""
        from histoflow.config.base import load_model_config
        from histoflow.config.study import StudyConfig
        from histoflow.workflows.study.run import resolve_paths, run_study

        def work():
            from histoflow.core.paths import find_recipe

            path = config if config.exists() else (find_recipe(config) or config)  # a recipe by name
            cfg = resolve_paths(load_model_config(StudyConfig, path, list(set_ or [])), path.resolve().parent)
            folder = out or Path("runs") / cfg.name
            return folder, run_study(cfg, folder, quiet=state.quiet)

        folder, record = run_verb(work)
        from histoflow.workflows.study.report import print_study

        print_study(console, record)
        console.print(f"study folder: {folder}  (report: {folder / 'report.html'})")
