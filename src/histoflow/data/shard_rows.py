"""Encoded tile images out of Parquet tile shards, by (shard file, row): a container like PCam's HDF5.

`histoflow tile` writes tiles into Parquet shards (see histoflow.tiling.shards for the layout);
a tile Manifest (histoflow.data.tiles) names each tile by its shard file (`path`) and its row in
that file (`item`). This reader answers the encoded bytes of those rows.

A shuffled batch wants single rows from many row groups, and Parquet reads a row group whole
(64 tiles): decoding row groups for single rows read every tile many times over per epoch, and
ran at a third of the rate of a folder of the same JPEGs (bench/bench_tile_train.py). The
shards are written uncompressed with the image column PLAIN-encoded (histoflow.tiling.shards),
so each image is one contiguous byte range of its file, preceded by its length: the first
read of a row group finds those ranges (checked against the decoded column), and every read
after that is one `os.pread` of exactly the tile's bytes, no open and no decode, outside the GIL.
A row group whose layout is anything else (another writer, compression, dictionary pages) is
read and decoded whole, with a small per-thread cache, as before.

Ranges are shared by all threads (a few integers per tile); open files are per thread, at most
OPEN_FILES each (a cohort has thousands of shards: one descriptor per shard would run out of
them), and never pickled: DataLoader process workers and decode threads each open their own.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from histoflow.core.errors import DataError

CACHED_ROW_GROUPS = 32  # per thread, for row groups read whole: 32 x 64 tiles of ~10-30 kB
OPEN_FILES = 64  # per thread


class _Shard:
    """What is known of one shard file: row group starts, and per row group the byte ranges of
    its images (None until first read; False when they cannot be read by range)."""

    __slots__ = ("starts", "total", "ranges")

    def __init__(self, starts: list[int], total: int):
        self.starts, self.total = starts, total
        self.ranges: list[tuple[np.ndarray, np.ndarray] | bool | None] = [None] * len(starts)


def _image_ranges(path: str, pf, rg: int, column) -> tuple[np.ndarray, np.ndarray] | bool:
    """(offsets, lengths) in the file of each image of row group `rg`, or False when the column
    chunk is not plain uncompressed bytes (then it is decoded instead). Every range is checked:
    it must hold the decoded value, preceded by its 4-byte little-endian length (PLAIN)."""
    index = pf.schema_arrow.get_field_index("image")
    meta = pf.metadata.row_group(rg).column(index)
    if meta.compression != "UNCOMPRESSED" or meta.has_dictionary_page or "PLAIN" not in meta.encodings:
        return False
    start = meta.data_page_offset
    with open(path, "rb", buffering=0) as fh:
        raw = os.pread(fh.fileno(), meta.total_compressed_size, start)
    offsets = np.empty(len(column), np.int64)
    lengths = np.empty(len(column), np.int64)
    pos = 0
    for k in range(len(column)):
        value = column[k].as_py()
        if value is None:
            return False
        n = len(value)
        while True:  # page statistics may hold a copy of a value: it is not preceded by the length
            at = raw.find(value, pos)
            if at < 4:
                if at < 0:
                    return False
                pos = at + 1
                continue
            if int.from_bytes(raw[at - 4 : at], "little") == n:
                break
            pos = at + 1
        offsets[k], lengths[k] = start + at, n
        pos = at + n
    return offsets, lengths


class ShardRows:
    """bytes of row `item` of shard `path` (the `image` column)."""

    def __init__(self, cached_row_groups: int = CACHED_ROW_GROUPS, open_files: int = OPEN_FILES):
        self.cached_row_groups = cached_row_groups
        self.open_files = open_files
        self._shards: dict[str, _Shard] = {}  # shared by threads: filled once, read many times
        self._local = threading.local()

    def _state(self) -> Any:
        state = self._local
        if not hasattr(state, "files"):
            state.files = OrderedDict()  # path -> unbuffered file object, LRU order (closed when dropped)
            state.groups = OrderedDict()  # (path, row group) -> pyarrow BinaryArray, LRU order
        return state

    def _parquet(self, path: str):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds; word them once
            raise DataError(f"{path}: cannot open tile shard ({exc})") from exc

    def _shard(self, path: str) -> _Shard:
        shard = self._shards.get(path)
        if shard is None:
            pf = self._parquet(path)
            try:
                starts, total = [], 0
                for rg in range(pf.num_row_groups):
                    starts.append(total)
                    total += pf.metadata.row_group(rg).num_rows
            finally:
                pf.close()
            shard = self._shards[path] = _Shard(starts, total)
        return shard

    def _fd(self, path: str) -> int:
        files = self._state().files
        fh = files.get(path)
        if fh is None:
            try:
                fh = files[path] = open(path, "rb", buffering=0)  # kept open; closed on eviction
            except OSError as exc:
                raise DataError(f"{path}: cannot open tile shard ({exc})") from exc
            while len(files) > self.open_files:
                files.popitem(last=False)[1].close()
        else:
            files.move_to_end(path)
        return fh.fileno()

    def _group(self, path: str, rg: int):
        """Row group `rg`'s image column, decoded (cached per thread); learns its byte ranges."""
        state = self._state()
        key = (path, rg)
        column = state.groups.get(key)
        if column is not None:
            state.groups.move_to_end(key)
            return column
        pf = self._parquet(path)
        try:
            column = pf.read_row_group(rg, columns=["image"], use_threads=False).column("image").combine_chunks()
            shard = self._shard(path)
            if shard.ranges[rg] is None:
                shard.ranges[rg] = _image_ranges(path, pf, rg, column)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt shard: name it
            raise DataError(f"{path}: cannot read row group {rg} of tile shard ({exc})") from exc
        finally:
            pf.close()
        state.groups[key] = column
        while len(state.groups) > self.cached_row_groups:
            state.groups.popitem(last=False)
        return column

    def locate(self, path: str, item: int) -> tuple[int, int]:
        """(row group, row inside it) of row `item` of the file."""
        shard = self._shard(path)
        if not 0 <= item < shard.total:
            raise DataError(f"{path}: tile shard has {shard.total} rows, no row {item}")
        rg = bisect.bisect_right(shard.starts, item) - 1
        return rg, item - shard.starts[rg]

    def row_bytes(self, path: str, item: int) -> bytes:
        return self.rows_bytes([(path, item)])[0]

    def rows_bytes(self, rows: list[tuple[str, int]]) -> list[bytes]:
        """Bytes of many (path, item) rows, in the order asked: by byte range where the shard
        allows it, else each row group decoded once."""
        out: list[bytes] = [b""] * len(rows)
        for k, (path, item) in enumerate(rows):
            rg, row = self.locate(path, item)
            ranges = self._shard(path).ranges[rg]
            if not isinstance(ranges, tuple):  # first visit (decoding learns the ranges), or no ranges
                out[k] = self._group(path, rg)[row].as_py()
                continue
            offsets, lengths = ranges
            n = int(lengths[row])
            try:
                data = os.pread(self._fd(path), n, int(offsets[row]))
            except OSError as exc:
                raise DataError(f"{path}: cannot read row {item} of tile shard ({exc})") from exc
            if len(data) != n:
                raise DataError(f"{path}: tile shard is shorter than its metadata says (row {item}); tile it again")
            out[k] = data
        return out

    def __reduce__(self):  # a process worker gets a fresh reader: no open files cross fork or spawn
        return ShardRows, (self.cached_row_groups, self.open_files)


def is_shard(path: str) -> bool:
    return Path(path).suffix == ".parquet"
