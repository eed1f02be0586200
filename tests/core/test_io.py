"""Atomic writes: a file appears whole or not at all, and a failed write leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from histoflow.core.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, is_temporary


def test_writes_replace_whole_files(tmp_path):
    target = tmp_path / "deep" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01", fsync=True)
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.bin", "out.txt"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"auc": 0.9})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"auc": 0.')  # half a file, then the writer dies
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"auc": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_temporary_keeps_the_suffix_and_is_recognisable(tmp_path):
    with atomic_path(tmp_path / "heatmap.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and is_temporary(tmp)
        tmp.write_bytes(b"png")
    assert not is_temporary(tmp_path / "heatmap.png")


def test_json_writes_non_finite_numbers_as_null(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"auc": float("nan"), "ci": [0.5, float("inf")], "n": 3})
    assert json.loads(path.read_text()) == {"auc": None, "ci": [0.5, None], "n": 3}


def test_kill_during_write_leaves_the_previous_version(tmp_path):
    """A process killed between writing and renaming never replaces the target."""
    target = tmp_path / "shard.bin"
    atomic_write_bytes(target, b"old")
    code = (
        "import os, sys\n"
        "from histoflow.core.io import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'new but unfinished')\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ}, capture_output=True)
    assert proc.returncode == -9
    assert target.read_bytes() == b"old"
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert leftovers and all(is_temporary(p) for p in leftovers)  # recognisable as debris of a killed write
