"""Parquet tile shards, the manifest and JSON reports: the on-disk layout of a tiling run.

    OUT/config.json                          resolved TileConfig (a re-run must match it)
    OUT/manifest.parquet                     one row per kept tile of every complete slide (no pixels)
    OUT/slides/<slide_id>/report.json        kept/rejected counts and why, timings, errors
    OUT/slides/<slide_id>/thumbnail.png      slide with tissue outline, planned tiles, legend and scale bar
    OUT/slides/<slide_id>/view.jpg           the unmarked view the mask was made from (at mask_downsample)
    OUT/slides/<slide_id>/mask.png           the tissue mask (white = tissue)
    OUT/shards/<slide_id>/part-00000.parquet tiles with their encoded image

Every file is written through histoflow.core.io (a temporary name in the same folder, then a
rename): a shard or report that exists is complete. A shard's key-value metadata holds its kept/rejected counts, so a
resumed run rebuilds the slide report without reading pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from histoflow.core.errors import DataError
from histoflow.core.io import atomic_path

# the schema reads as a table: the formatter leaves it so
# fmt: off
SCHEMA = pa.schema([
    ("tile_id", pa.string()), ("slide_id", pa.string()), ("x", pa.int64()), ("y", pa.int64()),
    ("level", pa.int16()), ("size_px0", pa.int32()), ("mpp", pa.float64()), ("tile_px", pa.int32()),
    ("tissue_fraction", pa.float32()), ("whitespace_fraction", pa.float32()), ("blur_var", pa.float32()),
    ("image_format", pa.string()), ("image", pa.binary()),
])
# fmt: on
META_KEY = b"histoflow.shard"
ROW_GROUP_ROWS = 64  # TileDataset reads one row group per random access: keep it a few MB


def slide_dir(out: Path, slide_id: str) -> Path:
    return Path(out) / "slides" / slide_id


def shard_path(out: Path, slide_id: str, shard: int) -> Path:
    return Path(out) / "shards" / slide_id / f"part-{shard:05d}.parquet"


def write_shard(path: Path, rows: list[dict], stats: dict) -> None:
    """Write rows (dicts with SCHEMA's columns) and their stats to `path`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [r[name] for r in rows] for name in SCHEMA.names}
    table = pa.table(columns, schema=SCHEMA).replace_schema_metadata({META_KEY: json.dumps(stats).encode()})
    # fsync: a resumed run trusts every shard it finds, also after a power cut
    with atomic_path(path, fsync=True) as tmp:
        # images are already compressed: Parquet compression would only cost time
        pq.write_table(
            table, tmp, row_group_size=ROW_GROUP_ROWS, compression="none", use_dictionary=["slide_id", "image_format"]
        )


def shard_stats(path: Path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    if META_KEY not in meta:
        raise DataError(f"{path}: not a histoflow tile shard (no {META_KEY.decode()} metadata)")
    return json.loads(meta[META_KEY])


def read_shard(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: cannot read tile shard ({exc})") from exc


MANIFEST_COLUMNS = [n for n in SCHEMA.names if n != "image"]


def write_manifest(out: Path, slide_ids: list[str]) -> Path:
    """manifest.parquet: every kept tile of the given (complete) slides, with its shard and row."""
    out = Path(out)
    tables = []
    for slide_id in sorted(slide_ids):
        for path in sorted((out / "shards" / slide_id).glob("part-*.parquet")):
            t = read_shard(path, MANIFEST_COLUMNS)
            rel = str(path.relative_to(out))
            t = t.append_column("shard", pa.array([rel] * t.num_rows, pa.string()))
            t = t.append_column("row", pa.array(range(t.num_rows), pa.int64()))
            tables.append(t)
    schema = pa.schema([SCHEMA.field(n) for n in MANIFEST_COLUMNS] + [("shard", pa.string()), ("row", pa.int64())])
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    dest = out / "manifest.parquet"
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp)
    return dest
