"""Slide readers of a tiling job, opened lazily in whichever process does the work and cached there.

A TileSpec carries a slide path, never a reader: readers hold file handles and caches that
must not be pickled. Each process (the driver, a pool worker, a Spark executor) opens what it
needs on first use and keeps at most MAX_OPEN_READERS open. In-memory slides (ArraySlide:
tests, montages) have no file to reopen; they are registered under their "<array ...>" path
and travel to pool workers once, at start-up (see tiling.local).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from histoflow.config.tiling import TileConfig
from histoflow.slide.base import BaseSlide, slide_id_of

MAX_OPEN_READERS = 8  # per process: bounded file handles and OpenSlide caches
_READERS: OrderedDict[tuple, BaseSlide] = OrderedDict()
_IN_MEMORY: dict[str, BaseSlide] = {}  # "<array ...>" path -> ArraySlide, for tests and montages
_READERS_LOCK = threading.Lock()  # small jobs read tiles on threads (see LocalEngine.extract)


def cached_reader(path: str, cfg: TileConfig) -> BaseSlide:
    """The reader of `path` in this process (opened on first use, then cached)."""
    if path in _IN_MEMORY:
        return _IN_MEMORY[path]
    key = (path, cfg.backend, cfg.slide_mpp)
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            from histoflow.slide.open import open_slide

            reader = _READERS[key] = open_slide(path, backend=cfg.backend, mpp=cfg.slide_mpp)
            while len(_READERS) > MAX_OPEN_READERS:
                _READERS.popitem(last=False)[1].close()
        else:
            _READERS.move_to_end(key)
    return reader


def close_readers() -> None:
    """Close the readers this process opened (their caches and kept levels go with them)."""
    with _READERS_LOCK:
        while _READERS:
            _READERS.popitem(last=False)[1].close()


def register_in_memory(slide: BaseSlide) -> str:
    """Make an in-memory slide (ArraySlide) addressable by its path in this and forked processes."""
    _IN_MEMORY[slide.path] = slide
    return slide.path


def in_memory_slide(path: str) -> BaseSlide | None:
    """The registered in-memory slide of `path`, or None for a slide file."""
    return _IN_MEMORY.get(path)


def in_memory_slides() -> dict[str, BaseSlide]:
    """A copy of this process's registered in-memory slides (to hand to pool workers)."""
    return dict(_IN_MEMORY)


def add_in_memory(slides: dict[str, BaseSlide]) -> None:
    """Register slides handed over by the process that started this one."""
    _IN_MEMORY.update(slides)


def slide_id_for(path: str) -> str:
    """The slide id of a path: an in-memory slide's own id, else the file name's."""
    slide = _IN_MEMORY.get(path)
    return slide.slide_id if slide is not None else slide_id_of(path)
