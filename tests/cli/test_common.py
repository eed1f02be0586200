"""What every verb shares: --version, one-line errors with exit code 2, --debug tracebacks."""

from __future__ import annotations

from typer.testing import CliRunner

from histoflow.cli import app
from histoflow.cli.common import state
from histoflow.core.version import __version__

runner = CliRunner()


def _run(*args: str):
    try:
        return runner.invoke(app, list(args))
    finally:
        state.quiet = state.debug = False  # the group callback sets them; keep tests independent


def test_version():
    result = _run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"histoflow {__version__}"


def test_missing_input_is_one_line_exit_2(tmp_path):
    result = _run("info", str(tmp_path / "nope.svs"))
    assert result.exit_code == 2
    assert "nope.svs" in result.output and "Traceback" not in result.output


def test_out_naming_a_file_names_it(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    result = _run("tile", str(tmp_path / "nope.svs"), "--out", str(taken))
    assert result.exit_code == 2, result.output
    assert "taken" in result.output and "not a folder" in result.output and "Traceback" not in result.output


def test_debug_shows_the_traceback(tmp_path):
    result = _run("--debug", "info", str(tmp_path / "nope.svs"))
    assert result.exit_code != 0 and result.exception is not None  # raised, not turned into a line
    assert "slide file not found" in str(result.exception)
