"""A thread-safe LRU cache of encoded bytes (tiles, overlay images), bounded by their total size."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class ByteCache:
    """Least recently used entries leave first once the values exceed `max_bytes` (0: no cache)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                self._bytes -= len(self._items.popitem(last=False)[1])

    def discard(self, predicate) -> None:
        """Drop every entry whose key satisfies `predicate` (a slide closed, an overlay re-read)."""
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                self._bytes -= len(self._items.pop(key))

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict:
        return {
            "entries": len(self),
            "bytes": self._bytes,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
        }
