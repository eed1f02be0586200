"""Progress bars: one library (rich), and quiet is an argument, never a global.

Every loop a user waits for takes `quiet` from its caller (the CLI's `--quiet`) and opens
`progress_bar(total, description, quiet=quiet)`; nothing reads an environment variable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Bar(Protocol):
    def advance(self, n: int = 1) -> None: ...


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass


class _RichBar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def progress_bar(total: int | None, description: str, quiet: bool = False, unit: str = "") -> Iterator[Bar]:
    """A rich progress bar (transient: it clears when done), or a silent stand-in when quiet."""
    if quiet:
        yield _Silent()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit) if unit else TextColumn(""),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=True) as progress:
        yield _RichBar(progress, progress.add_task(description, total=total))
