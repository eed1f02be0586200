"""The units of work every engine maps: a batch of tiles, and one whole shard.

`process_tiles(specs, cfg)` reads, checks and encodes a batch (a pool or thread task);
`write_slide_shard(out, specs, cfg)` does that for one shard's specs and writes the shard
itself (a Spark task, or a pool task when shards are many). ShardAccumulator assembles
results in spec order, so a shard is the same whichever engine made it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path

from histoflow.config.tiling import TileConfig
from histoflow.tiling.grid import TileSpec
from histoflow.tiling.memory import max_rss_mb
from histoflow.tiling.qc import tile_result
from histoflow.tiling.read import read_tiles
from histoflow.tiling.readers import cached_reader
from histoflow.tiling.shards import shard_path, write_shard


def process_tile(spec: TileSpec, cfg: TileConfig) -> tuple[str, dict | str]:
    """Read, check and encode one tile: see tile_result."""
    return process_tiles([spec], cfg)[0][0]


def process_tiles(specs: Sequence[TileSpec], cfg: TileConfig) -> tuple[list, float]:
    """A batch of tiles (one pool task) and this worker's peak memory so far."""
    results: list[tuple[str, dict | str]] = []
    for slide_path, tiles in groupby(specs, key=lambda spec: spec.slide):  # runs of one slide
        group = list(tiles)
        try:
            images = read_tiles(cached_reader(slide_path, cfg), group)
        except Exception as exc:  # noqa: BLE001 - the slide cannot be opened: every tile fails
            images = [exc] * len(group)
        results.extend(tile_result(s, img, cfg) for s, img in zip(group, images))
    return results, max_rss_mb()


class ShardAccumulator:
    """Collects the results of one shard's tiles (in spec order) into rows and stats."""

    def __init__(self, slide_id: str, shard: int, n_tiles: int):
        self.slide_id, self.shard, self.n_tiles = slide_id, shard, n_tiles
        self.rows: list[dict] = []
        self.rejected: Counter = Counter()
        self.errors: list[str] = []
        self.seen = 0

    def add(self, status: str, payload, cfg: TileConfig) -> None:
        self.seen += 1
        if status == "kept":
            self.rows.append(payload)
        elif status == "rejected":
            self.rejected[payload] += 1
        else:
            self.rejected["read_error"] += 1
            self.errors.append(payload)

    @property
    def done(self) -> bool:
        return self.seen == self.n_tiles

    def failed(self, cfg: TileConfig) -> bool:
        return bool(self.errors) and cfg.on_tile_error == "fail"

    def stats(self, maxrss_mb: float) -> dict:
        return {
            "slide_id": self.slide_id,
            "shard": self.shard,
            "tiles": self.n_tiles,
            "kept": len(self.rows),
            "rejected": dict(self.rejected),
            "errors": self.errors[:5],
            "worker_maxrss_mb": round(maxrss_mb, 1),
        }


def write_slide_shard(out: str, specs: Sequence[TileSpec], cfg: TileConfig) -> dict:
    """Process and write one shard (all `specs` share slide and shard index): the Spark task.
    A shard with a failed read under on_tile_error=fail is not written, so a re-run retries it."""
    acc = ShardAccumulator(specs[0].slide_id, specs[0].shard, len(specs))
    results, rss = process_tiles(specs, cfg)
    for status, payload in results:
        acc.add(status, payload, cfg)
    stats = acc.stats(rss)
    if not acc.failed(cfg):
        write_shard(shard_path(Path(out), acc.slide_id, acc.shard), acc.rows, stats)
    stats["failed"] = acc.failed(cfg)
    return stats
