"""The `histoflow` command: the group, its global options, and one module per stage.

Each stage module (data, slides, train, evaluate, predict, mil, system) adds its verbs with
`register(app)`; verbs stay thin: parse options, call the library, print.
"""

from __future__ import annotations

import typer

from histoflow.cli import data, evaluate, mil, predict, slides, system, train
from histoflow.cli.common import setup_logging, state

app = typer.Typer(help="histoflow: computational pathology from patches and whole slides.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def main(quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; no progress bars.")) -> None:
    setup_logging(quiet)
    state.quiet = quiet


for stage in (data, slides, train, evaluate, predict, mil, system):
    stage.register(app)
