"""Overlapping stages for slide inference: reader threads decode tiles while the model runs.

Why threads, not DataLoader processes: the expensive steps (OpenSlide/tifffile/libjpeg
decoding, OpenCV resizing, the model's kernels) all release the GIL, so threads overlap them
as well as processes would, start instantly, share the in-memory slides used by tests and
montages, and need no pickling. Each thread opens its own reader (file handles and decoder
caches are not shared between threads).

`stream_batches` keeps up to `prefetch` batches in flight: while the model consumes batch i,
readers are already decoding batches i+1..i+prefetch, so the model never waits for I/O unless
decoding is slower than the model overall. How many reader threads by default: see
`reader_threads` (none when a CPU model already uses every core).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


def reader_threads(requested: int | None, device) -> int:
    """Reader threads for a tile stream: `requested`, or by default 2 beside a GPU model, and
    on the CPU only as many as the cores torch's own threads leave free (at most 2).

    Why not always 2: a CPU model's intra-op threads already fill their cores, so a reader
    thread preempts one of them and the other then idles at the next barrier. On a 2-core host
    that contention cost more than the reading itself (bench/bench_slide_predict.py, one run:
    0.83 of the model alone's speed with 2 reader threads, 0.91 reading between batches).
    """
    if requested is not None:
        return requested
    if getattr(device, "type", str(device)) != "cpu":
        return 2
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(2, cores - torch.get_num_threads()))


@dataclass
class Batch:
    indices: np.ndarray  # positions (in the source's order) of the tiles that were read
    images: np.ndarray  # (n, tile_px, tile_px, 3) uint8
    errors: list[tuple[int, str]] = field(default_factory=list)  # (position, message) of tiles that failed


class TileSource(Protocol):
    """What the reader threads read tiles from: SlideTileSource or EncodedTileSource.

    A source that reads neighbouring tiles more cheaply together also defines
    `read_many(positions) -> list[np.ndarray | Exception]` (one entry per position, the
    exception a tile raised in its place); the reader threads then ask it for a whole batch."""

    def __len__(self) -> int: ...

    def read(self, i: int) -> np.ndarray: ...

    def close(self) -> None: ...


class SlideTileSource:
    """Tiles of one slide read from the slide file, one reader per thread."""

    def __init__(self, slide_path: str, specs: Sequence, open_reader: Callable[[], object]):
        self.slide_path, self.specs = slide_path, list(specs)
        self._open = open_reader
        self._local = threading.local()
        self._readers: list = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.specs)

    def _reader(self):
        r = getattr(self._local, "reader", None)
        if r is None:
            r = self._local.reader = self._open()
            with self._lock:
                self._readers.append(r)
        return r

    def read(self, i: int) -> np.ndarray:
        from histoflow.tiling.read import read_tile

        return read_tile(self._reader(), self.specs[i])

    def read_many(self, positions: Sequence[int]) -> list[np.ndarray | Exception]:
        """A batch's tiles cut from region reads of neighbouring tiles (tiling.read.read_tiles):
        with overlap, a tile-by-tile loop decodes every pixel several times (about 4 times at
        half-tile overlap); a bad region still costs only its own tiles."""
        from histoflow.tiling.read import read_tiles

        return read_tiles(self._reader(), [self.specs[i] for i in positions])

    def close(self) -> None:
        for r in self._readers:
            if hasattr(r, "close") and getattr(r, "backend", "") != "array":
                r.close()
        self._readers.clear()


class EncodedTileSource:
    """Tiles already extracted to shards: JPEG/PNG bytes decoded in the reader threads."""

    def __init__(self, images: Sequence[bytes], tile_px: int):
        self.images, self.tile_px = list(images), tile_px

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int) -> np.ndarray:
        from histoflow.core.images import decode_bytes
        from histoflow.data.datasets import fit_size

        return fit_size(decode_bytes(self.images[i], f"stored tile {i}"), self.tile_px, "resize", f"stored tile {i}")

    def close(self) -> None:
        pass


def _read_each(source, positions: range) -> list[np.ndarray | Exception]:
    out: list[np.ndarray | Exception] = []
    for i in positions:
        try:
            out.append(source.read(i))
        except Exception as exc:  # noqa: BLE001 - a corrupt region costs its tile, not the slide
            out.append(exc)
    return out


def _read_batch(source, positions: range, tile_px: int) -> Batch:
    read_many = getattr(source, "read_many", None)
    tiles = read_many(positions) if read_many is not None else _read_each(source, positions)
    images = np.empty((len(positions), tile_px, tile_px, 3), np.uint8)  # filled in place: no stacking copy
    ok: list[int] = []
    errors: list[tuple[int, str]] = []
    for i, img in zip(positions, tiles):
        if isinstance(img, Exception):
            errors.append((i, f"{type(img).__name__}: {img}"))
        elif img.shape != (tile_px, tile_px, 3):
            errors.append((i, f"tile has shape {img.shape}, expected {(tile_px, tile_px, 3)}"))
        else:
            images[len(ok)] = img
            ok.append(i)
    return Batch(np.asarray(ok, np.int64), images[: len(ok)], errors)


def stream_batches(
    source, tile_px: int, batch_size: int = 64, workers: int = 2, prefetch: int = 4
) -> Generator[Batch, None, None]:
    """Batches of decoded tiles in source order, read `prefetch` batches ahead by `workers` threads."""
    n = len(source)
    starts = list(range(0, n, batch_size))
    if workers <= 0:  # plain loop: debugging, or measuring what the overlap buys
        for s in starts:
            yield _read_batch(source, range(s, min(n, s + batch_size)), tile_px)
        return
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tile-reader") as pool:
        try:
            it = iter(starts)
            for s in it:
                pending.append(pool.submit(_read_batch, source, range(s, min(n, s + batch_size)), tile_px))
                if len(pending) >= max(prefetch, workers):
                    break
            while pending:
                batch = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(_read_batch, source, range(nxt, min(n, nxt + batch_size)), tile_px))
                yield batch
        finally:
            for f in pending:  # an abandoned generator must not leave readers running
                f.cancel()
