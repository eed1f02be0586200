"""Atomic writes: every file histoflow writes appears whole or not at all.

A writer fills a temporary sibling (same folder, so the final rename never crosses file
systems) and `os.replace`s it onto the real name. An interrupted run therefore never leaves a
half-written shard, checkpoint, report or CSV that looks complete, and resuming can trust
any file it finds. The temporary name starts with a dot and carries the process id, so two
processes writing the same file never share a temporary, and `*.tmp` leftovers of a killed
run are recognisable (`is_temporary`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp"
_counter = itertools.count()  # next() on a count is atomic under the GIL


def temporary_name(path: str | os.PathLike) -> Path:
    """The temporary sibling a write of `path` goes through. It keeps the suffix, so libraries
    that choose a format by extension (PIL, matplotlib) still see `.png`; the process id and a
    counter keep concurrent writers (threads or processes) of one file apart."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}-{next(_counter)}{TMP_MARK}{path.suffix}")


def is_temporary(path: str | os.PathLike) -> bool:
    """True for a leftover temporary of an interrupted write."""
    name = Path(path).name
    return name.startswith(".") and TMP_MARK in name


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces `path`, on error it is removed.

        with atomic_path(out / "tiles.parquet") as tmp:
            pq.write_table(table, tmp)

    `fsync=True` flushes the file to disk before the rename, for outputs that a resumed job
    trusts after a power cut too (tile shards), at the cost of a disk flush per file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, payload: Any, indent: int | None = 2) -> Path:
    """JSON with NaN/inf refused loudly would lose a report; they are written as null instead."""
    return atomic_write_text(path, json.dumps(_finite(payload), indent=indent) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
