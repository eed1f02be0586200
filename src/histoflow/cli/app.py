"""The `histoflow` command: the group, its global options, and one module per stage.

Each stage module (data, slides, train, evaluate, predict, mil, study, view, system) adds its verbs with
`register(app)`; verbs stay thin: parse options, call the library, print.
"""

from __future__ import annotations

import re

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from histoflow.cli import data, evaluate, mil, mitosis, predict, slides, study, system, train, view
from histoflow.cli.common import setup_logging, state

GLOBAL_FLAGS = ("-q", "--quiet", "--debug")


def _plain_type(label: str) -> str:
    """`list[Path]` -> `path`: the element type, as typer writes a single value's type."""
    return re.sub(r"list\[(\w+)\]", lambda m: m.group(1).lower(), label)


class PlainVariadicArgument(TyperArgument):
    """A variadic argument whose help shows the type of one value (`sources... <path>`), not
    typer's Python annotation (`sources... <list[Path]>`); the `...` already says "several"."""

    def display_type(self, ctx) -> str:
        return _plain_type(super().display_type(ctx))


def plain_help_types(command) -> None:
    """Help texts show plain types in every verb (issue 20): a repeatable option shows the type of
    one value (`--split <str>`, and `--set <key=value>`), a variadic argument likewise."""
    for sub in getattr(command, "commands", {}).values():
        plain_help_types(sub)
    for param in command.params:
        if isinstance(param, TyperOption) and param.multiple and param.metavar is None:
            param.metavar = "<key=value>" if "--set" in param.opts else f"<{_plain_type(param.bare_type())}>"
        elif isinstance(param, TyperArgument) and param.nargs != 1:
            param.__class__ = PlainVariadicArgument


class GlobalFlagsAnywhere(TyperGroup):
    """`histoflow predict ... -q` means `histoflow -q predict ...`: the global flags are taken
    wherever they are typed, so nobody has to know they belong before the verb. It also makes
    the help of every verb under it show plain types (plain_help_types)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        plain_help_types(self)

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
