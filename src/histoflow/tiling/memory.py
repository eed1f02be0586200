"""Peak memory of this process, for the per-slide reports (`worker_maxrss_mb`).

Separate from the engines because every worker kind (thread, pool process, Spark executor)
reports it the same way, and the figure needs Linux-specific care (VmHWM, not ru_maxrss).
"""

from __future__ import annotations

import resource
import sys


def reset_peak_rss() -> None:
    """Start this process's peak-memory figure (VmHWM) afresh, where Linux allows it: a job run
    in-process reports its own peak, not whatever the calling process did before."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:  # not Linux, or not permitted: the figure stays the process's lifetime peak
        pass


def max_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux keeps ru_maxrss across fork+exec, so a worker started from a big parent (a pytest run
    with torch loaded) would report the parent's peak; VmHWM is this process's own. getrusage
    is the fallback elsewhere (macOS reports bytes there, Linux KiB)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
