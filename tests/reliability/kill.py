"""kill -9 helpers shared by the reliability tests: start a verb, kill its process when a file
appears, find the processes it left, check that every output that exists is whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from histoflow.core.io import is_temporary


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "histoflow.cli", "--quiet", *args]


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _env() -> dict:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def descendants(pid: int) -> set[int]:
    todo, seen = [pid], set()
    while todo:
        for c in children(todo.pop()) - seen:
            seen.add(c)
            todo.append(c)
    return seen


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_when(cmd: list[str], ready, timeout: float = 300, settle: float = 0.0) -> set[int]:
    """Start `cmd`, wait until ready() holds (then `settle` s more), SIGKILL that process only and
    return every process it had started (gathered while it ran: its children are reparented)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    seen: set[int] = set()
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before the moment to kill it"
        assert time.time() < deadline, "the moment to kill never came"
        seen |= descendants(proc.pid)
        time.sleep(0.01)
    end = time.time() + settle
    while time.time() < end:
        seen |= descendants(proc.pid)
        time.sleep(0.01)
    seen |= descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: what it started must not outlive it
    proc.wait()
    return seen


def assert_no_orphans(pids: set[int], within: float = 10.0) -> None:
    deadline = time.time() + within
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    left = {p: _cmdline(p) for p in pids if alive(p)}
    assert not left, f"processes outlived the killed run: {left}"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def first(pattern: str, root: Path):
    """ready() for kill_when: a file matching `pattern` exists under root."""
    return lambda: root.exists() and any(not is_temporary(p) for p in root.rglob(pattern))


def assert_whole(root: Path) -> None:
    """Every output that looks complete reads (atomic writes leave a killed file temporary)."""
    for path in root.rglob("*"):
        if not path.is_file() or is_temporary(path):
            continue
        if path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix in (".json", ".geojson"):
            json.loads(path.read_text())
        elif path.suffix == ".npy":
            np.load(path)
        elif path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                im.load()


def tiles_of(out: Path) -> dict[str, bytes]:
    """tile id -> encoded image over every shard of a tiling run."""
    found = {}
    for shard in sorted((out / "shards").rglob("part-*.parquet")):
        t = pq.read_table(shard, columns=["tile_id", "image"]).to_pydict()
        found.update(zip(t["tile_id"], t["image"]))
    return found


SLIDES = ("a", "b")


def two_slides(root: Path) -> tuple[Path, Path]:
    """Two copies of the CMU slide and an untrained checkpoint: a kill between the slides leaves
    one complete and one not started. Returns (folder, checkpoint)."""
    import shutil

    from tests.conftest import need_data
    from tests.predict.test_slide import _tiny_checkpoint

    for name in SLIDES:
        shutil.copy(need_data("wsi", "cmu-1-small-region.svs"), root / f"{name}.svs")
    return root, _tiny_checkpoint(root / "m.pt")


def slides_cmd(verb: str, inputs: tuple[Path, Path], out: Path, settings: list[str]) -> list[str]:
    """`histoflow VERB a.svs b.svs --checkpoint m.pt --out OUT SETTINGS...`."""
    root, ckpt = inputs
    slides = [str(root / f"{n}.svs") for n in SLIDES]
    return cli(verb, *slides, "--checkpoint", str(ckpt), "--out", str(out), *settings)
