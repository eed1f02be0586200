"""What every verb shares: the console, logging, `run_verb` (errors -> one line, exit 2),
`command.yaml` records, the `--quiet` state and slide-path expansion."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console

from histoflow.core.errors import HistoflowError
from histoflow.core.io import atomic_write_text
from histoflow.slide.files import expand_slides  # noqa: F401 - the verbs import it from here

M = TypeVar("M", bound=BaseModel)
console = Console()


@dataclass
class CliState:
    """Options of the `histoflow` group that every verb passes on explicitly (never via env vars)."""

    quiet: bool = False
    debug: bool = False
    # the config a `--config`/`--set` verb resolved (set by verb_config, recorded in command.yaml)
    resolved: BaseModel | None = None


state = CliState()


def setup_logging(quiet: bool = False) -> None:
    from rich.logging import RichHandler

    logger = logging.getLogger("histoflow")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=Console(stderr=True), show_path=False, show_time=False))
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line (no traceback) and return the Exit to raise."""
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def run_verb(fn, *args, **kwargs):
    """Run a library call. Errors a user can cause end in one line and exit code 2: histoflow's
    own errors, and file-system errors (an `--out` that is a file, a folder given for a file, no
    permission), which name the path. Anything else is a bug: one line pointing at `--debug`,
    exit code 1; `histoflow --debug VERB` shows every traceback. On success the verb's resolved
    options are written beside its output (record_command)."""
    state.resolved = None
    try:
        result = fn(*args, **kwargs)
    except HistoflowError as exc:
        if state.debug:
            raise
        raise fail(str(exc)) from None
    except (FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        if state.debug:
            raise
        raise fail(describe_os_error(exc)) from None
    except Exception as exc:
        if state.debug:
            raise
        raise fail(
            f"unexpected {type(exc).__name__}: {exc} (this is a histoflow bug; rerun with "
            f"`histoflow --debug ...` for the traceback and report it)",
            code=1,
        ) from None
    record_command()
    return result


def describe_os_error(exc: OSError) -> str:
    """A file-system error as the user's problem: which path, what was expected there."""
    path = exc.filename or ""
    what = {
        FileExistsError: "already exists and is not a folder (give a folder path, or remove the file)",
        NotADirectoryError: "is a file where a folder was expected (give a folder path)",
        IsADirectoryError: "is a folder where a file was expected (give a file path)",
        FileNotFoundError: "not found",
        PermissionError: "permission denied",
    }.get(type(exc), exc.strerror or str(exc))
    return f"{path}: {what}" if path else f"{exc}"


def record_command(results: dict | None = None) -> Path | None:
    """Write the running verb and every option it resolved (defaults included) as YAML into its
    `--out` folder (`command.yaml`), or beside an `--out` file (`<name>.command.yaml`): what
    produced an output stays next to it. `train` and `tune` also write their full run config.
    For a verb that resolved a config (`--config`/`--set`), `options` holds only what was typed
    and `config` the resolved config: an untyped option's default is not what ran.
    `results`: what the verb found worth keeping with it (e.g. predict's warnings), under `results`."""
    import yaml

    from histoflow.core.version import __version__

    ctx = _current_context()
    out = ctx.params.get("out") if ctx is not None else None
    if ctx is None or out is None:
        return None
    out = Path(out)
    # an --out folder (it exists: the verb succeeded) holds it; an --out file gets a sibling
    target = out / "command.yaml" if out.is_dir() else out.with_name(out.stem + ".command.yaml")

    def plain(value):  # YAML-safe: paths as strings, lists of paths as lists of strings
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    resolved, state.resolved = state.resolved, None
    typed = {k: v for k, v in ctx.params.items() if resolved is None or given_on_command_line(k)}
    record: dict = {"command": ctx.command_path, "options": {k: plain(v) for k, v in typed.items()}}
    if resolved is not None:
        record["config"] = resolved.model_dump(mode="json")
    record["histoflow"] = __version__
    if results:
        record["results"] = results
    return atomic_write_text(target, yaml.safe_dump(record, sort_keys=False, allow_unicode=True))


def _current_context():
    get_current_context: Callable[..., Any]  # typer's copy of click or click's, whichever is there
    try:  # typer >= 0.20 carries its own copy of click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover
        from click import get_current_context
    return get_current_context(silent=True)


def given_on_command_line(name: str) -> bool:
    """True when the running verb's option `name` was typed (or set through its env var), not defaulted."""
    ctx = _current_context()
    if ctx is None:
        return False
    source = ctx.get_parameter_source(name)
    # DEFAULT_MAP: histoflow sets no default_map but the deprecated --data's (typed, under its old name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT", "DEFAULT_MAP")


# -- the shared vocabulary: an option name means one thing in every verb -------------------------------
# (tests/cli/test_vocabulary.py holds every verb to it: same name, same help, same kind of value)
def data_argument(help: str, required: bool = True) -> Any:
    """A verb's input data, positional like every verb's inputs (`histoflow evaluate --checkpoint
    CKPT DATA`); pair it with `deprecated_data_option()` and call `check_data_alias` first thing."""
    return typer.Argument(... if required else None, help=help, show_default=False)


def _data_option_fills_argument(ctx: typer.Context, value: Any) -> Any:
    # eager, so it runs before the arguments are read: `--data PATH` becomes the default of the
    # DATA argument (click's default_map), so a required DATA is not missing
    if value is not None:
        ctx.default_map = {**(ctx.default_map or {}), "data": value}
    return value


def deprecated_data_option(flag: str = "--data") -> Any:
    """`--data PATH` (or another `flag`), the old spelling of the positional DATA: hidden from
    help, kept so that scripts written before issue 20 still run (with a one-line note)."""
    return typer.Option(None, flag, hidden=True, is_eager=True, callback=_data_option_fills_argument)


def check_data_alias(data_option: Any, usage: str, flag: str = "--data") -> None:
    """The DATA argument came from the deprecated `flag`: print a one-line note; from both: an
    error. `usage`: the verb's new form, e.g. "histoflow evaluate --checkpoint CKPT DATA".
    command.yaml records the path once, under `data`."""
    ctx = _current_context()
    if ctx is not None:
        ctx.params.pop("data_option", None)
    if data_option is None or ctx is None:
        return
    source = ctx.get_parameter_source("data")
    if source is not None and source.name == "COMMANDLINE":
        raise fail(f"the data was given twice (as an argument and as {flag}); give it once: {usage}")
    Console(stderr=True).print(
        f"note: {flag} is deprecated; give the data as an argument: {usage}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def slide_mpp_option() -> Any:
    """The level-0 resolution of the slides, for files that lack it (never the output resolution)."""
    return typer.Option(None, "--slide-mpp", help="Microns per level-0 pixel of slides whose files lack it.")


def model_mpp_option() -> Any:
    """The resolution tiles are read at for a model (output resolution of tile, input of predict)."""
    return typer.Option(
        None,
        "--mpp",
        help="Microns per pixel of the tiles the model sees [default: what the checkpoint records; PCam: 0.972].",
    )


def batch_size_option(default: int) -> Any:
    return typer.Option(default, "--batch-size", help="Images (patches or tiles) per batch.")


def device_option() -> Any:
    return typer.Option(None, "--device", help="cpu, cuda or cuda:N [default: cuda when available, else cpu].")


def reader_threads_option() -> Any:
    return typer.Option(
        None,
        "--reader-threads",
        help="Threads reading and decoding tiles ahead of the model (0: read between batches) "
        "[default: 2 with a GPU; on the CPU, only cores the model's threads leave free].",
    )


def split_option() -> Any:
    return typer.Option(None, "--split", help="Only this split of the data: train, val (or valid) or test.")


def config_option(what: str) -> Any:
    """The `--config YAML` option of a verb whose settings are the schema `what` names."""
    return typer.Option(None, "--config", help=f"{what} as YAML; options typed on the command line override it.")


def set_option(example: str) -> Any:
    """The repeatable `--set key=value` option, applied after the file and the typed options."""
    return typer.Option(None, "--set", help=f"Override a config key: --set {example} (repeatable).")


def verb_config(model: type[M], config: Path | None, sets: list[str] | None, keys: dict[str, str] | None = None) -> M:
    """The config of a verb that takes `--config YAML` and `--set`: the file's values (or the
    schema's defaults), then the options typed on the command line, then `--set key=value`.

    The running verb's options whose names are fields of `model` (or keys of `keys`, which maps
    an option name to its dotted config key, e.g. `top_k` -> `aggregate.k`) take part. Options
    left at their default do not override the file, so a YAML recipe plus one changed flag does
    what it says.
    """
    from histoflow.config.base import apply_overrides, read_yaml, validate

    raw = read_yaml(config) if config is not None else {}
    keys = keys or {}
    ctx = _current_context()
    params = ctx.params if ctx is not None else {}
    for name, value in params.items():
        if (name not in model.model_fields and name not in keys) or not given_on_command_line(name):
            continue
        node = raw
        *parents, leaf = keys.get(name, name).split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = str(value) if isinstance(value, Path) else value
    apply_overrides(raw, sets)
    state.resolved = validate(model, raw, str(config) if config is not None else "(command line)")
    return state.resolved
