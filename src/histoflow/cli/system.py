"""`histoflow doctor`, `histoflow models` and `histoflow demo`: the machine, the model zoo, the tour."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from histoflow.cli.common import console, run_verb, state


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor() -> None:
        """Versions of torch, timm, OpenSlide, Java/Spark, and whether a GPU is visible."""
        from histoflow.workflows.doctor import checks

        table = Table(title="histoflow doctor")
        table.add_column("component")
        table.add_column("ok")
        table.add_column("details")
        for name, ok, details in checks():
            table.add_row(name, "[green]yes[/]" if ok else "[red]no[/]", details)
        console.print(table)

    @app.command("models")
    def models_cmd(
        timm_filter: Optional[str] = typer.Option(
            None, "--timm", help="Also list timm models matching this pattern, e.g. 'resnet*'."
        ),
    ) -> None:
        """List histoflow's models (any timm backbone name works too)."""
        from histoflow.models.factory import list_models

        table = Table(title="histoflow models")
        table.add_column("name")
        table.add_column("what it is")
        for name, text in sorted(list_models().items()):
            table.add_row(name, text)
        table.add_row("<any timm name>", "a timm backbone with a new head, e.g. resnet34, densenet161, legacy_xception")
        console.print(table)
        if timm_filter:
            import timm

            console.print(", ".join(timm.list_models(timm_filter)))

    @app.command()
    def demo(
        data_root: Optional[Path] = typer.Option(None, help="Folder holding pcam/ [default: $HISTOFLOW_DATA]."),
        out: Path = typer.Option(Path("runs/demo"), help="Output folder of the demo run."),
        set_: list[str] = typer.Option(
            None, "--set", help="Override the recipe, e.g. --set train.epochs=1 (quick look)."
        ),
    ) -> None:
        """The main job on real PCam patches (what `make demo` runs)."""
        from histoflow.workflows.demo import run_demo

        code = run_verb(run_demo, data_root, out, console, list(set_ or []), quiet=state.quiet)
        raise typer.Exit(code or 0)
