"""The `histoflow` command: the group, its global options, and one module per stage.

Each stage module (data, slides, train, evaluate, predict, mil, system) adds its verbs with
`register(app)`; verbs stay thin: parse options, call the library, print.
"""

from __future__ import annotations

import typer

from histoflow.cli import data, evaluate, mil, mitosis, predict, slides, study, system, train
from histoflow.cli.common import setup_logging, state

app = typer.Typer(
    help="histoflow: computational pathology from patches and whole slides.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from histoflow.core.version import __version__

        typer.echo(f"histoflow {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; no progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show the Python traceback of any error."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print histoflow's version and exit."
    ),
) -> None:
    setup_logging(quiet)
    state.quiet, state.debug = quiet, debug


for stage in (data, slides, train, evaluate, predict, mil, mitosis, study, system):
    stage.register(app)
