"""TileDataset: tiles from Parquet shards as `(uint8 CHW tensor, label index)` for training.

Like histoflow.data.datasets.PatchDataset: label is -1 when unlabelled, scaling/normalisation
happen in the model. Labels come from a CSV joined on slide id: `slide,label` (slide-level),
optionally with `x,y,width,height` in level-0 pixels (region-level: a tile takes the label of
the region holding its centre; region labels win over a slide label).

Only the index (shard, row group, row) lives in the dataset; Parquet files are opened lazily
in each DataLoader worker and one decoded row group is cached per worker.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from histoflow.core.errors import DataError

log = logging.getLogger(__name__)


def _shard_files(shards) -> list[Path]:
    if isinstance(shards, (str, Path)):
        p = Path(shards)
        if p.is_dir():
            if (p / "manifest.parquet").exists():
                import pyarrow.parquet as pq

                rel = pq.read_table(p / "manifest.parquet", columns=["shard"]).column("shard").unique().to_pylist()
                return [p / r for r in sorted(rel)]
            files = sorted(p.glob("**/part-*.parquet"))
            if not files:
                raise DataError(f"{p}: no tile shards (part-*.parquet) found")
            return files
        return [p]
    return [Path(s) for s in shards]


def read_labels(path: str | Path) -> tuple[dict[str, str], list[tuple]]:
    """slide labels {slide: label} and region labels [(slide, x, y, w, h, label)] from a CSV."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: label CSV not found")
    slide_labels: dict[str, str] = {}
    regions: list[tuple] = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if not {"slide", "label"} <= cols:
            raise DataError(f"{path}: label CSV needs columns slide,label (got {sorted(cols)})")
        region_cols = {"x", "y", "width", "height"}
        has_regions = region_cols <= cols
        for n, row in enumerate(reader, start=2):
            slide, label = (row["slide"] or "").strip(), (row["label"] or "").strip()
            if not slide or not label:
                raise DataError(f"{path}:{n}: empty slide or label")
            if has_regions and all((row[c] or "").strip() for c in region_cols):
                try:
                    x, y, w, h = (float(row[c]) for c in ("x", "y", "width", "height"))
                except ValueError as exc:
                    raise DataError(f"{path}:{n}: x,y,width,height must be numbers ({exc})") from exc
                regions.append((slide, x, y, w, h, label))
            else:
                if slide in slide_labels and slide_labels[slide] != label:
                    raise DataError(f"{path}:{n}: slide {slide!r} has two labels ({slide_labels[slide]!r}, {label!r})")
                slide_labels[slide] = label
    return slide_labels, regions


class TileDataset(Dataset):
    """Tiles of Parquet shards (a tiling output folder, or shard files) as a torch Dataset."""

    def __init__(
        self,
        shards,
        labels: str | Path | None = None,
        class_names: Sequence[str] | None = None,
        transform: Callable | None = None,
        drop_unlabelled: bool = False,
    ):
        import pyarrow.parquet as pq

        self.files = _shard_files(shards)
        index_cols = ["tile_id", "slide_id", "x", "y", "size_px0"]
        file_idx: list[int] = []
        rg_idx: list[int] = []
        row_idx: list[int] = []
        meta: dict[str, list[Any]] = {c: [] for c in index_cols}
        for f_i, path in enumerate(self.files):
            try:
                pf = pq.ParquetFile(path)
            except Exception as exc:
                raise DataError(f"{path}: cannot open tile shard ({exc})") from exc
            for rg in range(pf.num_row_groups):
                t = pf.read_row_group(rg, columns=index_cols)
                file_idx += [f_i] * t.num_rows
                rg_idx += [rg] * t.num_rows
                row_idx += list(range(t.num_rows))
                for c in index_cols:
                    meta[c] += t.column(c).to_pylist()
        # UTF-8 bytes (decoded with .decode()), not numpy's ASCII str->bytes cast, which fails on
        # the tiles of 'pätient é.svs'; bytes, not str objects, so workers share the pages
        self.tile_ids: np.ndarray = np.array([t.encode() for t in meta["tile_id"]], dtype=np.bytes_)
        self.slide_ids: np.ndarray = np.array([t.encode() for t in meta["slide_id"]], dtype=np.bytes_)
        self._loc: np.ndarray = (
            np.stack([np.array(file_idx, np.int32), np.array(rg_idx, np.int32), np.array(row_idx, np.int32)], 1)
            if file_idx
            else np.zeros((0, 3), np.int32)
        )
        labels_txt = self._join_labels(labels, meta)
        names = sorted({lab for lab in labels_txt if lab}) if class_names is None else list(class_names)
        unknown = sorted({lab for lab in labels_txt if lab} - set(names))
        if unknown:
            raise DataError(f"{labels}: label(s) {unknown} are not among the classes {names}")
        index = {n: i for i, n in enumerate(names)}
        self.class_names = names
        self.labels: np.ndarray = np.array([index.get(lab, -1) for lab in labels_txt], dtype=np.int64)
        if drop_unlabelled:
            keep = self.labels >= 0
            self.tile_ids, self.slide_ids, self._loc, self.labels = (
                a[keep] for a in (self.tile_ids, self.slide_ids, self._loc, self.labels)
            )
        self.transform = transform
        self._files: dict[int, Any] = {}  # pyarrow.parquet.ParquetFile (pyarrow ships no type hints)
        self._cached: tuple | None = None

    @staticmethod
    def _join_labels(labels, meta) -> list[str]:
        n = len(meta["tile_id"])
        if labels is None:
            return [""] * n
        slide_labels, regions = read_labels(labels)
        seen = set(meta["slide_id"])
        # a CSV may name slides by file name ("a.svs") where tile shards use ids ("a")
        from histoflow.slide.base import slide_id_of

        def key(name: str) -> str:
            return name if name in seen else slide_id_of(name)

        slide_labels = {key(k): v for k, v in slide_labels.items()}
        regions = [(key(r[0]),) + tuple(r[1:]) for r in regions]
        by_slide: dict[str, list] = {}
        for slide, x, y, w, h, label in regions:
            by_slide.setdefault(slide, []).append((x, y, w, h, label))
        missing = sorted((set(slide_labels) | set(by_slide)) - seen)
        if missing:
            log.warning("%s: %d labelled slide(s) have no tiles: %s", labels, len(missing), missing[:5])
        out = []
        for sid, x, y, size in zip(meta["slide_id"], meta["x"], meta["y"], meta["size_px0"]):
            label = slide_labels.get(sid, "")
            cx, cy = x + size / 2, y + size / 2  # a tile belongs to the region holding its centre
            for rx, ry, rw, rh, rlabel in by_slide.get(sid, ()):
                if rx <= cx < rx + rw and ry <= cy < ry + rh:
                    label = rlabel
                    break
            out.append(label)
        return out

    def __len__(self) -> int:
        return len(self.labels)

    def tile_id(self, i: int) -> str:
        return self.tile_ids[i].decode()

    def load(self, i: int) -> np.ndarray:
        """The decoded HxWx3 uint8 tile of row i."""
        from histoflow.core.images import decode_bytes

        f_i, rg, row = (int(v) for v in self._loc[i])
        if self._cached is None or self._cached[0] != (f_i, rg):
            pf = self._files.get(f_i)
            if pf is None:  # opened here, inside the worker
                import pyarrow.parquet as pq

                pf = self._files[f_i] = pq.ParquetFile(self.files[f_i])
            self._cached = ((f_i, rg), pf.read_row_group(rg, columns=["image"]).column("image"))
        data = self._cached[1][row].as_py()
        return decode_bytes(data, f"{self.files[f_i]}:{self.tile_id(i)}")

    def __getitem__(self, i: int):
        img = torch.from_numpy(np.ascontiguousarray(self.load(i))).permute(2, 0, 1)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"], state["_cached"] = {}, None  # never pickle open Parquet handles
        return state
