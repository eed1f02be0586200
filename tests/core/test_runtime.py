"""histoflow.core.runtime: the malloc tuning that keeps CPU training steps out of the page-fault path."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
if sys.argv[1] == "tuned":
    from histoflow.core.runtime import keep_freed_memory_in_heap
    assert keep_freed_memory_in_heap()
x = torch.empty(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # what a training step does: allocate, touch and free big activations
    x = torch.ones(40 * 1024 * 1024 // 4) * 2  # 40 MiB: above glibc's largest dynamic mmap threshold (32 MiB)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_freed_activations_are_reused_instead_of_faulted_in_again():
    plain, tuned = _faults("plain"), _faults("tuned")
    # 10 x 2 tensors of 40 MiB = 200k fresh pages without tuning; the tuned heap reuses them
    assert plain > 100_000, plain
    assert tuned < plain / 2, (plain, tuned)  # measured 31k-82k against 205k


def test_tuning_can_be_switched_off():
    code = "from histoflow.core.runtime import keep_freed_memory_in_heap as k; print(k())"
    env = {"HISTOFLOW_MALLOC_TUNING": "0", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"
