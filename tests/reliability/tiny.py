"""Shared builders for the reliability tests: tiny real-data folders and one-epoch runs."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from histoflow.cli import app
from tests.conftest import need_data
from tests.helpers import TINY_CLI_RUN, sets

runner = CliRunner()
TINY = TINY_CLI_RUN


def pcam_folder(root: Path, n_per_class: int = 12, classes: dict[str, str] | None = None, prefix: str = "") -> Path:
    """Real PCam valid JPEGs copied into root/<class>/; `classes` maps PCam label -> folder name."""
    classes = classes or {"0": "0", "1": "1"}
    src = need_data("pcam", "valid")
    for label, name in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / label).glob("*.jpg"))[:n_per_class]:
            shutil.copy(f, root / name / f"{prefix}{f.name}")
    return root


def train(data: Path, out: Path, *overrides: str):
    """`histoflow train` (one epoch of two steps, 32 px) on `data`; returns the CliRunner result."""
    return runner.invoke(app, ["--quiet", "train", "--out", str(out), *sets(f"data.path={data}", *TINY, *overrides)])


def invoke(*args: str):
    return runner.invoke(app, ["--quiet", *args])


def error_line(result, *words: str) -> str:
    """The one `error:` line of a usage error (exit 2), holding every word in `words`."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for word in words:
        assert word in result.output, result.output
    return lines[0]
