"""The `histoflow` command: the group, its global options, and one module per stage.

Each stage module (data, slides, train, evaluate, predict, mil, study, view, system) adds its verbs with
`register(app)`; verbs stay thin: parse options, call the library, print.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from histoflow.cli import data, evaluate, mil, mitosis, predict, slides, study, system, train, view
from histoflow.cli.common import setup_logging, state

GLOBAL_FLAGS = ("-q", "--quiet", "--debug")


class GlobalFlagsAnywhere(TyperGroup):
    """`histoflow predict ... -q` means `histoflow -q predict ...`: the global flags are taken
    wherever they are typed, so nobody has to know they belong before the verb."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in GLOBAL_FLAGS and not args[0].startswith("-"):
            flags = [a for a in args[1:] if a in GLOBAL_FLAGS]
            args = flags + [args[0]] + [a for a in args[1:] if a not in GLOBAL_FLAGS]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=GlobalFlagsAnywhere,
    help="histoflow: computational pathology from patches and whole slides.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # help texts are plain text: rich markup would eat "[default: ...]" written in them
    rich_markup_mode=None,
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


for stage in (data, slides, train, evaluate, predict, mil, mitosis, study, view, system):
    stage.register(app)
