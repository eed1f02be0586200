"""Process-level settings that make PyTorch on a CPU fast.

glibc's malloc serves every allocation above its mmap threshold (128 KiB, growing to at most
32 MiB) with a fresh mmap and returns it to the OS on free. A CNN training step allocates and
frees activations of tens of MiB each step, so every step faults hundreds of thousands of
fresh zeroed pages in, and that kernel work can be a large share of a CPU step (how much:
`bench/bench_train.py`, and `HISTOFLOW_MALLOC_TUNING=0` to compare). Raising the threshold
keeps freed memory in the process heap (peak RSS is kept, not returned), which suits a
training or prediction process. Set HISTOFLOW_MALLOC_TUNING=0 to leave malloc alone.

jemalloc/tcmalloc via LD_PRELOAD do the same job but must be installed and set before the
process starts; mallopt needs nothing and works at any time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory_in_heap() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); True when applied."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("HISTOFLOW_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    _done = ok
    log.debug("glibc malloc thresholds raised: %s", ok)
    return ok
