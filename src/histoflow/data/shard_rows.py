"""Encoded tile images out of Parquet tile shards, by (shard file, row): a container like PCam's HDF5.

`histoflow tile` writes tiles into Parquet shards (see histoflow.tiling.shards for the layout);
a tile Manifest (histoflow.data.tiles) names each tile by its shard file (`path`) and its row in
that file (`item`). This reader answers the encoded bytes of those rows.

A Parquet file is read a row group at a time (the shards keep them small: 64 tiles), so the
reader keeps the last few decoded row groups of each thread (a shuffled batch touches many row
groups; the next batch of the same epoch often touches the same ones again) and `rows_bytes`
reads every row group a batch needs once. Open files and caches are per thread and never
pickled: DataLoader process workers and decode threads each open their own.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from histoflow.core.errors import DataError

CACHED_ROW_GROUPS = 32  # per thread: 32 x 64 tiles of ~10-30 kB, well under 100 MB


class ShardRows:
    """bytes of row `item` of shard `path` (the `image` column), with a small per-thread cache."""

    def __init__(self, cached_row_groups: int = CACHED_ROW_GROUPS):
        self.cached_row_groups = cached_row_groups
        self._local = threading.local()

    def _state(self) -> Any:
        state = self._local
        if not hasattr(state, "files"):
            state.files = {}  # path -> (ParquetFile, row group start rows)
            state.groups = OrderedDict()  # (path, row group) -> pyarrow BinaryArray, LRU order
        return state

    def _file(self, path: str):
        state = self._state()
        entry = state.files.get(path)
        if entry is None:
            import pyarrow.parquet as pq

            try:
                pf = pq.ParquetFile(path)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds; word them once
                raise DataError(f"{path}: cannot open tile shard ({exc})") from exc
            starts, total = [], 0
            for rg in range(pf.num_row_groups):
                starts.append(total)
                total += pf.metadata.row_group(rg).num_rows
            entry = state.files[path] = (pf, starts, total)
        return entry

    def _group(self, path: str, rg: int):
        state = self._state()
        key = (path, rg)
        column = state.groups.get(key)
        if column is not None:
            state.groups.move_to_end(key)
            return column
        pf, _, _ = self._file(path)
        try:
            column = pf.read_row_group(rg, columns=["image"], use_threads=False).column("image").combine_chunks()
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt shard: name it
            raise DataError(f"{path}: cannot read row group {rg} of tile shard ({exc})") from exc
        state.groups[key] = column
        while len(state.groups) > self.cached_row_groups:
            state.groups.popitem(last=False)
        return column

    def locate(self, path: str, item: int) -> tuple[int, int]:
        """(row group, row inside it) of row `item` of the file."""
        _, starts, total = self._file(path)
        if not 0 <= item < total:
            raise DataError(f"{path}: tile shard has {total} rows, no row {item}")
        rg = bisect.bisect_right(starts, item) - 1
        return rg, item - starts[rg]

    def row_bytes(self, path: str, item: int) -> bytes:
        rg, row = self.locate(path, item)
        return self._group(path, rg)[row].as_py()

    def rows_bytes(self, rows: list[tuple[str, int]]) -> list[bytes]:
        """Bytes of many (path, item) rows, each row group read once, in the order asked."""
        located = [(path, *self.locate(path, item)) for path, item in rows]
        order = sorted(range(len(rows)), key=lambda k: located[k][:2])  # row group by row group
        out: list[bytes] = [b""] * len(rows)
        for k in order:
            path, rg, row = located[k]
            out[k] = self._group(path, rg)[row].as_py()
        return out

    def __reduce__(self):  # a process worker gets a fresh reader: no open files cross fork or spawn
        return ShardRows, (self.cached_row_groups,)


def is_shard(path: str) -> bool:
    return Path(path).suffix == ".parquet"
