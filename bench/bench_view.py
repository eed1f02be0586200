"""Slide lab tile serving: 8 concurrent HTTP clients vs the viewer's tile function in a loop.

Run: PYTHONPATH=src python bench/bench_view.py [--slide SVS] [--repeats 3] [--memory-requests 10000]
Prints one JSON line:
- throughput: deep-zoom tiles/s through `histoflow view` (its own process, uvicorn, 8 client
  threads with keep-alive connections in this process) vs `DeepZoom.tile_bytes` called in a
  loop in this process on the same tiles (read + resize + JPEG encode: the work each request
  does), and their ratio (target >= 0.8: HTTP, the event loop and threads cost little). The
  server runs with its tile cache off (`--tile-cache-mb 0`) so both sides do the same work for
  every tile; the loop and the server alternate `--repeats` times (medians), so a change in the
  machine's load hits both. Latency p50/p95 per request (8 in flight) and per loop call.
- memory: a second server with a small tile cache (2 MB, so it evicts all the time) answers
  `--memory-requests` random tiles of every level from the 8 clients; its resident memory
  (VmRSS) before and after every 1,000 requests, the growth after the first 1,000 (OpenSlide's
  32 MB cache, the overview and the worker threads' malloc arenas fill then) and over the
  second half (target: none beyond noise; every cache and the open readers are bounded).

Slide: the real Aperio CMU-1-Small-Region (OpenSlide); tiles: every tile of its three finest
deep-zoom levels (full, 1/2 and 1/4 resolution: the levels a viewer asks for most).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from histoflow.slide import open_slide  # noqa: E402
from histoflow.viewer.deepzoom import DeepZoom  # noqa: E402
from histoflow.viewer.server import check_port  # noqa: E402

DATA = Path(os.environ.get("HISTOFLOW_DATA", REPO.parent / "shared" / "data"))


class Server:
    """`histoflow view SLIDE` in its own process, as a user runs it."""

    def __init__(self, slide: str, cache_mb: float):
        self.port = check_port("127.0.0.1", 0)
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        cmd = [sys.executable, "-m", "histoflow.cli", "-q", "view", slide, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "--tile-cache-mb", str(cache_mb)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/api/slides")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"histoflow view did not start: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def fetch_all(port: int, paths: list[str], clients: int = 8) -> tuple[float, list[float]]:
    """Every path once, `clients` at a time on keep-alive connections: (seconds, latencies)."""
    todo = iter(paths)
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        while True:
            with lock:
                path = next(todo, None)
            if path is None:
                break
            t0 = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            mine.append(time.perf_counter() - t0)
            if r.status != 200 or body[:2] != b"\xff\xd8":
                failures.append(f"{path}: {r.status}")
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
    return elapsed, latencies


def loop(dz: DeepZoom, tiles: list[tuple[int, int, int]]) -> tuple[float, list[float]]:
    latencies = []
    t0 = time.perf_counter()
    for level, col, row in tiles:
        t = time.perf_counter()
        dz.tile_bytes(level, col, row)
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - t0, latencies


def pct(values: list[float], q: float) -> float:
    return round(1000 * statistics.quantiles(values, n=100)[q - 1], 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slide", default=str(DATA / "wsi" / "cmu-1-small-region.svs"))
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4, help="passes over the tiles per timed run")
    ap.add_argument("--memory-requests", type=int, default=10_000)
    ap.add_argument("--memory-cache-mb", type=float, default=2.0)
    args = ap.parse_args()

    slide = open_slide(args.slide)
    dz = DeepZoom(slide)
    g = dz.geometry
    top = g.level_count - 1
    finest = [
        (lv, c, r)
        for lv in (top, top - 1, top - 2)
        for c in range(g.level_tiles(lv)[0])
        for r in range(g.level_tiles(lv)[1])
    ]
    tiles = finest * args.rounds
    sid = quote(slide.slide_id, safe="")
    paths = [f"/api/slides/{sid}/tiles/{lv}/{c}_{r}.jpeg" for lv, c, r in tiles]

    server = Server(args.slide, cache_mb=0)
    try:
        fetch_all(server.port, paths[: len(finest)], args.clients)  # warm: slide opened, pages cached
        loop(dz, finest)
        served, looped, lat_served, lat_loop = [], [], [], []
        for _ in range(args.repeats):
            s, lat = fetch_all(server.port, paths, args.clients)
            served.append(s)
            lat_served += lat
            s, lat = loop(dz, tiles)
            looped.append(s)
            lat_loop += lat
    finally:
        server.stop()

    every = [
        (lv, c, r)
        for lv in range(g.level_count)
        for c in range(g.level_tiles(lv)[0])
        for r in range(g.level_tiles(lv)[1])
    ]
    rng = random.Random(0)
    picks = [rng.choice(every) for _ in range(args.memory_requests)]
    mem_paths = [f"/api/slides/{sid}/tiles/{lv}/{c}_{r}.jpeg" for lv, c, r in picks]
    server = Server(args.slide, cache_mb=args.memory_cache_mb)
    try:
        rss = [server.rss_mb()]  # VmRSS before, then after every 1,000 requests
        t_all = 0.0
        for start in range(0, len(mem_paths), 1000):
            t, _ = fetch_all(server.port, mem_paths[start : start + 1000], args.clients)
            t_all += t
            rss.append(server.rss_mb())
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        conn.request("GET", "/api/stats")
        stats = json.loads(conn.getresponse().read())
    finally:
        server.stop()

    med = statistics.median
    n = len(tiles)
    out = {
        "bench": "view",
        "slide": Path(args.slide).name,
        "backend": slide.backend,
        "tiles": n,
        "distinct_tiles": len(finest),
        "clients": args.clients,
        "repeats": args.repeats,
        "served_tiles_per_s": round(n / med(served), 1),
        "loop_tiles_per_s": round(n / med(looped), 1),
        "ratio": round(med(looped) / med(served), 3),
        "target": 0.8,
        "served_p50_ms": pct(lat_served, 50),
        "served_p95_ms": pct(lat_served, 95),
        "loop_p50_ms": pct(lat_loop, 50),
        "loop_p95_ms": pct(lat_loop, 95),
        "runs_s": {"served": [round(v, 3) for v in served], "loop": [round(v, 3) for v in looped]},
        "memory": {
            "requests": args.memory_requests,
            "tile_cache_mb": args.memory_cache_mb,
            "rss_mb_every_1000": [round(v, 1) for v in rss],
            "growth_mb_after_first_1000": round(rss[-1] - rss[1], 1),
            "growth_mb_second_half": round(rss[-1] - rss[len(rss) // 2], 1),
            "tiles_per_s_with_cache": round(len(mem_paths) / t_all, 1) if t_all else None,
            "cache": stats["tiles"],
        },
        "cpu_count": os.cpu_count(),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
