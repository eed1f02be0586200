"""Tile shards + a slide label CSV as a training Manifest (histoflow.data.tiles), on real slides.

The slides are built by scripts/make_pcam_cohort.py from real PCam patches, each patch on the
96 px grid at 0.972 um/px, and tiled once per module at that grid: every tile is one known PCam
patch, so which tile a row reads and which label it gets can be checked against the cohort's
own record (cells/<slide>.json) rather than against the code under test.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from histoflow.core.errors import DataError
from histoflow.core.images import decode_bytes
from histoflow.data.datasets import PatchDataset
from histoflow.data.loading import ThreadLoader, make_loader
from histoflow.data.samplers import SlideEpochSampler
from histoflow.data.shard_rows import ShardRows
from histoflow.data.splits import split_manifest
from histoflow.data.tiles import read_tile_cohort
from histoflow.slide.montage import write_pyramid_tiff
from histoflow.tiling import extract_tiles
from histoflow.tiling.shards import write_manifest
from tests.conftest import need_data
from tests.helpers import COHORT_MPP, COHORT_TILE_PX, tile_config, tiled_pcam_cohort

CELL = 96


@pytest.fixture(scope="module")
def tiled(tmp_path_factory) -> tuple[Path, Path]:
    """(cohort folder, tiling output): 6 train, 2 val, 2 test slides of 8 x 8 cells."""
    return tiled_pcam_cohort(tmp_path_factory.mktemp("tiles"))


@pytest.fixture(scope="module")
def labels(tiled) -> pd.DataFrame:
    return pd.read_csv(tiled[0] / "labels.csv", dtype=str)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _cells(cohort: Path, slide: str) -> dict[tuple[int, int], tuple[int, str]]:
    """(x, y) of each tissue cell in level-0 px -> (its label, its PCam source patch)."""
    cells = json.loads((cohort / "cells" / f"{slide}.json").read_text())["cells"]
    return {(c * CELL, r * CELL): (label, rel) for r, c, label, rel in cells}


def test_rows_decode_to_the_tiles_in_their_shards(tiled):
    cohort, tiles = tiled
    manifest = read_tile_cohort(tiles, cohort / "labels.csv").manifest
    frame = manifest.frame
    assert len(frame) == pq.read_metadata(tiles / "manifest.parquet").num_rows > 100
    # the bytes of each row, read independently of ShardRows: the whole shard, row by row
    truth = {}
    for path in set(frame["path"]):
        images = pq.read_table(path, columns=["image", "x", "y"]).to_pydict()
        for row, (data, x, y) in enumerate(zip(images["image"], images["x"], images["y"])):
            truth[(path, row)] = (data, x, y)
    rows = list(zip(frame["path"], frame["item"].astype(int)))
    assert [truth[r][1:] for r in rows] == list(zip(frame["x"], frame["y"]))  # row `item` is the tile at x, y
    reader = ShardRows(cached_row_groups=2)  # small cache: evictions and re-reads happen too
    order = np.random.default_rng(0).permutation(len(rows))
    assert reader.rows_bytes([rows[k] for k in order]) == [truth[rows[k]][0] for k in order]
    assert reader.row_bytes(*rows[-1]) == truth[rows[-1]][0]

    ds = PatchDataset(manifest, image_px=COHORT_TILE_PX)
    batch = ds.__getitems__(order.tolist())  # the batched path (_fill_rows, decode in place)
    per_item = np.stack([ds[int(k)][0].permute(1, 2, 0).numpy() for k in order[:20]])
    for j, k in enumerate(order):
        expected = decode_bytes(truth[rows[k]][0], "truth")
        assert np.array_equal(batch.images[j].permute(1, 2, 0).numpy(), expected), rows[k]
        if j < 20:
            assert np.array_equal(per_item[j], expected)
    assert batch.labels.tolist() == [ds.labels[k] for k in order]


def _shard_truth(tiles: Path) -> dict[tuple[str, int], bytes]:
    out = {}
    for path in sorted((tiles / "shards").glob("*/*.parquet")):
        for row, data in enumerate(pq.read_table(path, columns=["image"]).column("image").to_pylist()):
            out[(str(path), row)] = data
    return out


def test_shard_rows_read_tiles_by_byte_range_once_a_row_group_was_seen(tiled, monkeypatch):
    """The first read of a row group decodes it and learns where each image lies in the file;
    later reads are one pread per tile, never a row group decode."""
    _, tiles = tiled
    truth = _shard_truth(tiles)
    rows = list(truth)
    reader = ShardRows()
    assert reader.rows_bytes(rows) == list(truth.values())
    for path in {p for p, _ in rows}:
        assert all(isinstance(r, tuple) for r in reader._shards[path].ranges), path
    monkeypatch.setattr(reader, "_group", lambda *a: pytest.fail("decoded a row group again"))
    order = np.random.default_rng(1).permutation(len(rows))
    assert reader.rows_bytes([rows[k] for k in order]) == [truth[rows[k]] for k in order]


def test_shard_rows_decode_shards_of_another_layout(tiled, tmp_path):
    """A shard rewritten with compression (another writer's, say) has no plain byte ranges: its
    row groups are decoded, with the same bytes as the result."""
    _, tiles = tiled
    source = sorted((tiles / "shards").glob("*/*.parquet"))[0]
    for kind, options in (("snappy", {"compression": "snappy"}), ("dictionary", {"use_dictionary": True})):
        copy = tmp_path / f"{kind}.parquet"
        pq.write_table(pq.read_table(source), copy, row_group_size=16, **options)
        expected = pq.read_table(copy, columns=["image"]).column("image").to_pylist()
        reader = ShardRows(cached_row_groups=1)
        order = np.random.default_rng(0).permutation(len(expected)).tolist()
        assert reader.rows_bytes([(str(copy), k) for k in order]) == [expected[k] for k in order]
        assert set(reader._shards[str(copy)].ranges) == {False}, kind


def test_shard_rows_keep_few_files_open(tiled):
    """A cohort has thousands of shards: one open descriptor per shard and thread would run out."""
    _, tiles = tiled
    rows = list(_shard_truth(tiles))
    assert len({p for p, _ in rows}) == 10
    fds = lambda: len(list(Path("/proc/self/fd").iterdir()))  # noqa: E731
    before = fds()
    reader = ShardRows(open_files=3)
    for _ in range(2):
        reader.rows_bytes(rows)
    assert len(reader._state().files) == 3 and fds() - before <= 3


def test_shard_rows_bad_rows_and_shards_are_data_errors(tiled, tmp_path):
    _, tiles = tiled
    source = sorted((tiles / "shards").glob("*/*.parquet"))[0]
    n = pq.read_metadata(source).num_rows
    reader = ShardRows()
    with pytest.raises(DataError, match=rf"part-00000.parquet: tile shard has {n} rows, no row {n}"):
        reader.row_bytes(str(source), n)
    copy = tmp_path / "cut.parquet"
    shutil.copy(source, copy)
    reader.rows_bytes([(str(copy), k) for k in range(n)])  # ranges learned
    size = copy.stat().st_size
    with open(copy, "r+b") as fh:  # cut inside the last image: its range now runs past the end
        fh.truncate(int(reader._shards[str(copy)].ranges[-1][0][-1]) + 10)
    assert copy.stat().st_size < size
    with pytest.raises(DataError, match="cut.parquet: tile shard is shorter than its metadata says"):
        reader.row_bytes(str(copy), n - 1)
    with pytest.raises(DataError, match="cut.parquet: cannot open tile shard"):
        ShardRows().row_bytes(str(copy), 0)  # a fresh reader cannot even read its footer


def test_each_tile_shows_the_pcam_patch_of_its_cell(tiled):
    """Right row, right place: the tile at (x, y) of a slide is the PCam patch the cohort put in
    that cell (JPEG twice over, in the TIFF and in the shard: mean |difference| 1.4-4.1 here, against
    more than 30 to every other cell's patch)."""
    cohort, tiles = tiled
    manifest = read_tile_cohort(tiles, cohort / "labels.csv").manifest
    ds = PatchDataset(manifest, image_px=COHORT_TILE_PX)
    pcam = need_data("pcam")
    frame = manifest.frame
    for slide in ("pcam-train-002", "pcam-test-001"):
        cells = _cells(cohort, slide)
        rows = np.flatnonzero(frame["slide"] == slide)
        assert len(rows) >= 10
        sources = {k: cv2.cvtColor(cv2.imread(str(pcam / rel)), cv2.COLOR_BGR2RGB) for k, (_, rel) in cells.items()}
        for i in rows:
            tile = ds.load(int(i)).astype(np.int16)
            where = (int(frame.at[i, "x"]), int(frame.at[i, "y"]))
            diffs = {k: np.abs(tile - src).mean() for k, src in sources.items()}
            assert diffs[where] < 8, (slide, where, diffs[where])
            others = min(d for k, d in diffs.items() if k != where)
            assert others > 4 * diffs[where]


def test_labels_patients_splits_and_resolution_from_the_csv(tiled, labels):
    cohort, tiles = tiled
    tc = read_tile_cohort(tiles, cohort / "labels.csv")
    frame = tc.manifest.frame
    assert (tc.mpp, tc.tile_px) == (COHORT_MPP, COHORT_TILE_PX)
    assert tc.slides == sorted(labels["slide"]) and tc.notes == [] and not any(tc.excluded.values())
    assert tc.manifest.class_names == ["0", "1"] and tc.manifest.format == "tiles"
    per_slide = frame.groupby("slide")[["label", "patient", "split"]].agg(set)
    for row in labels.itertuples():
        assert per_slide.loc[row.slide].tolist() == [{row.label}, {row.patient}, {row.split}], row.slide
    assert (frame[["height", "width", "size_px0"]] == COHORT_TILE_PX).all().all()


def test_patient_column_groups_slides_in_one_split(tiled, labels, tmp_path):
    """No split column: the split is made, and slides of one patient never straddle it."""
    cohort, tiles = tiled
    rows = [{"slide": r.slide, "label": r.label, "patient": f"p{i // 2}"} for i, r in enumerate(labels.itertuples())]
    tc = read_tile_cohort(tiles, _write_csv(tmp_path / "patients.csv", rows))
    frame = tc.manifest.frame
    assert set(frame["split"]) == {""}
    assert frame.groupby("slide")["patient"].nunique().eq(1).all()
    assert frame.groupby("patient")["slide"].nunique().eq(2).all()
    split = split_manifest(tc.manifest, 0.3, 0.0, "patient", 0).frame
    assert set(split["split"]) == {"train", "val"}
    assert split.groupby("patient")["split"].nunique().eq(1).all()


def test_region_labels_tile_centre_inside_region_wins(tiled, labels, tmp_path):
    """Every slide labelled normal (0), each tumour cell a region labelled 1 (regions.csv): each
    tile then carries its own cell's label, exactly as the cohort composed it."""
    cohort, tiles = tiled
    regions = pd.read_csv(cohort / "regions.csv", dtype=str)
    rows = [{"slide": s, "x": "", "y": "", "width": "", "height": "", "label": "0"} for s in labels["slide"]]
    rows += regions.to_dict("records")
    tc = read_tile_cohort(tiles, _write_csv(tmp_path / "regions.csv", rows))
    frame = tc.manifest.frame
    truth = {s: _cells(cohort, s) for s in labels["slide"]}
    expected = [str(truth[s][(x, y)][0]) for s, x, y in zip(frame["slide"], frame["x"], frame["y"])]
    assert frame["label"].tolist() == expected
    assert 0 < expected.count("1") < len(expected)

    # the tile whose centre a region holds takes its label; a region over the rest of a tile does not
    slide = "pcam-train-001"
    (x1, y1), (x2, y2) = frame.loc[frame["slide"] == slide, ["x", "y"]].head(2).itertuples(index=False)
    blank = {"x": "", "y": "", "width": "", "height": ""}
    near = [
        {"slide": slide, **blank, "label": "0"},
        {"slide": slide, "x": x1 + 49, "y": y1, "width": 46, "height": CELL, "label": "1"},  # right of centre
        {"slide": slide, "x": x2 + 48, "y": y2 + 48, "width": 1, "height": 1, "label": "1"},  # the centre pixel
    ]
    got = read_tile_cohort(tiles, _write_csv(tmp_path / "near.csv", near)).manifest.frame
    assert got.set_index(["x", "y"])["label"].to_dict() == {
        (x, y): "1" if (x, y) == (x2, y2) else "0" for x, y in zip(got["x"], got["y"])
    }
    assert len(got) == (frame["slide"] == slide).sum()


def test_region_only_slides_keep_tiles_inside_regions_and_say_how_many_left(tiled, tmp_path):
    cohort, tiles = tiled
    regions = pd.read_csv(cohort / "regions.csv", dtype=str)
    slide = regions["slide"].iloc[0]
    rows = regions[regions["slide"] == slide].to_dict("records")
    rows.append({"slide": "pcam-train-001", "x": "", "y": "", "width": "", "height": "", "label": "0"})
    tc = read_tile_cohort(tiles, _write_csv(tmp_path / "r.csv", rows))
    frame = tc.manifest.frame
    on_slide = frame[frame["slide"] == slide]
    n_tiles = int((pq.read_table(tiles / "manifest.parquet").to_pandas()["slide_id"] == slide).sum())
    assert set(on_slide["label"]) == {"1"} and 0 < len(on_slide) < n_tiles
    assert f"{n_tiles - len(on_slide)} tile(s) outside every labelled region left out" in tc.notes


def test_slides_named_by_file_name(tiled, labels, tmp_path):
    cohort, tiles = tiled
    by_file = labels.assign(slide=[f"{s}.tif" for s in labels["slide"]])
    by_file.to_csv(tmp_path / "files.csv", index=False)
    a = read_tile_cohort(tiles, cohort / "labels.csv").manifest.frame
    b = read_tile_cohort(tiles, tmp_path / "files.csv").manifest.frame
    pd.testing.assert_frame_equal(a, b)


# -- bad input ---------------------------------------------------------------------------------------


def test_never_tiled_slides_are_one_error_listing_them(tiled, labels, tmp_path):
    cohort, tiles = tiled
    rows = labels.to_dict("records") + [
        {"slide": "ghost-b.svs", "label": "1", "patient": "g", "split": "train"},
        {"slide": "ghost-a", "label": "0", "patient": "g", "split": "train"},
    ]
    with pytest.raises(DataError) as err:
        read_tile_cohort(tiles, _write_csv(tmp_path / "ghosts.csv", rows))
    text = str(err.value)
    assert "2 labelled slide(s) were never tiled" in text and "ghost-a, ghost-b" in text and "ghosts.csv" in text


def test_unlabelled_slides_are_left_out_and_counted(tiled, labels, tmp_path):
    cohort, tiles = tiled
    dropped = ["pcam-train-003", "pcam-val-002"]
    labels[~labels["slide"].isin(dropped)].to_csv(tmp_path / "some.csv", index=False)
    tc = read_tile_cohort(tiles, tmp_path / "some.csv")
    assert tc.excluded["no label"] == dropped
    assert tc.notes == ["2 slide(s) left out (no label): pcam-train-003, pcam-val-002"]
    assert not set(dropped) & set(tc.manifest.frame["slide"]) and set(dropped).isdisjoint(tc.slides)


@pytest.fixture(scope="module")
def edge_tiles(tiled, tmp_path_factory) -> tuple[Path, list[str]]:
    """Two cohort slides, a slide of bare glass (tiling keeps no tile: tissue detection finds
    none) and a truncated slide (tiling fails), tiled together into one folder."""
    cohort, _ = tiled
    root = tmp_path_factory.mktemp("edge")
    slides = [cohort / "slides" / f"pcam-train-00{i}.tif" for i in (1, 2)]
    glass = np.clip(242 + np.random.default_rng(0).integers(-3, 4, (768, 768, 1)), 0, 255).astype(np.uint8)
    blank = write_pyramid_tiff(root / "glass.tif", np.repeat(glass, 3, axis=2), COHORT_MPP, min_level_px=256)
    broken = root / "broken.tif"
    broken.write_bytes(slides[0].read_bytes()[:2000])
    result = extract_tiles([*slides, blank, broken], root / "tiles", tile_config(), workers=1, progress=False)
    assert result["failed"] == ["broken"] and result["reports"]["glass"]["kept"] == 0
    return root / "tiles", [s.stem for s in slides]


def test_slides_without_tiles_or_failed_are_left_out_and_said(edge_tiles, tmp_path):
    tiles, good = edge_tiles
    rows = [{"slide": s, "label": str(i % 2)} for i, s in enumerate([*good, "glass", "broken"])]
    tc = read_tile_cohort(tiles, _write_csv(tmp_path / "l.csv", rows))
    assert tc.excluded == {"no label": [], "tiling failed": ["broken"], "no tiles": ["glass"]}
    assert tc.notes == ["1 slide(s) left out (tiling failed): broken", "1 slide(s) left out (no tiles): glass"]
    assert tc.slides == good
    # the only labelled slide kept no tile: nothing to train on, said so
    with pytest.raises(DataError, match="no labelled tiles"):
        read_tile_cohort(tiles, _write_csv(tmp_path / "glass.csv", [{"slide": "glass", "label": "0"}]))


def test_slides_tiled_at_two_resolutions_are_refused_naming_them(tiled, labels, tmp_path):
    """Two slides re-tiled at another mpp and tile size (a second `histoflow tile` run: the
    tiler refuses another config in one folder) and merged into the study's folder by hand,
    manifest rebuilt as the tiler writes it."""
    cohort, tiles = tiled
    again = ["pcam-test-001", "pcam-val-001"]
    other = tmp_path / "other"
    extract_tiles(
        [cohort / "slides" / f"{s}.tif" for s in again],
        other,
        tile_config(tile_px=64, mpp=1.458),
        workers=1,
        progress=False,
    )
    merged = tmp_path / "merged"
    shutil.copytree(tiles, merged)
    for s in again:
        for part in ("shards", "slides"):
            shutil.rmtree(merged / part / s)
            shutil.copytree(other / part / s, merged / part / s)
    write_manifest(merged, list(labels["slide"]))
    with pytest.raises(DataError) as err:
        read_tile_cohort(merged, cohort / "labels.csv")
    text = str(err.value)
    assert "different resolutions or tile sizes" in text
    assert "1.458 um/px, 64 px: pcam-test-001, pcam-val-001" in text
    assert "0.972 um/px, 96 px: pcam-test-002, pcam-train-001" in text
    # the two slides left unlabelled: the rest is one resolution again
    labels[~labels["slide"].isin(again)].to_csv(tmp_path / "rest.csv", index=False)
    tc = read_tile_cohort(merged, tmp_path / "rest.csv")
    assert (tc.mpp, tc.tile_px) == (COHORT_MPP, COHORT_TILE_PX) and tc.excluded["no label"] == again


def test_slides_tiled_by_different_resamplings_are_refused_naming_them(tiled, labels, tmp_path):
    """The cohort knows which resampling its tiles came from (the checkpoint keeps it); a folder
    merged by hand from tiling runs of two histoflow versions is refused, naming the slides."""
    from histoflow.tiling.read import PIXELS_VERSION

    cohort, tiles = tiled
    assert read_tile_cohort(tiles, cohort / "labels.csv").pixels_version == PIXELS_VERSION
    merged = tmp_path / "merged"
    shutil.copytree(tiles, merged)
    report = merged / "slides" / "pcam-val-001" / "report.json"
    older = json.loads(report.read_text())
    del older["pixels_version"]  # as histoflow wrote reports before the version was recorded
    report.write_text(json.dumps(older))
    mixed = rf"resample differently.*version 1: pcam-val-001; version {PIXELS_VERSION}: pcam-test-001"
    with pytest.raises(DataError, match=mixed):
        read_tile_cohort(merged, cohort / "labels.csv")
    labels[labels["slide"] != "pcam-val-001"].to_csv(tmp_path / "rest.csv", index=False)
    assert read_tile_cohort(merged, tmp_path / "rest.csv").pixels_version == PIXELS_VERSION


@pytest.mark.parametrize(
    "change, words",
    [
        ({"split": "holdout"}, ["unknown split name(s) ['holdout']", "train, val or test"]),
        ({"label": ""}, ["1 row(s) with an empty slide or label", "lines 3"]),
        ({"slide": " "}, ["1 row(s) with an empty slide or label", "lines 3"]),
    ],
)
def test_bad_label_rows_are_refused_naming_them(tiled, labels, tmp_path, change, words):
    cohort, tiles = tiled
    bad = labels.copy()
    for col, value in change.items():
        bad.loc[1, col] = value
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as err:
        read_tile_cohort(tiles, tmp_path / "bad.csv")
    for word in [*words, "bad.csv"]:
        assert word in str(err.value)


def test_split_names_are_read_whatever_their_case(tiled, labels, tmp_path):
    cohort, tiles = tiled
    labels.assign(split=labels["split"].map({"train": "Train", "val": "VALID", "test": "test"})).to_csv(
        tmp_path / "cased.csv", index=False
    )
    frame = read_tile_cohort(tiles, tmp_path / "cased.csv").manifest.frame
    assert frame.groupby("slide")["split"].first().to_dict() == dict(zip(labels["slide"], labels["split"]))


def test_a_split_column_filled_for_some_slides_only_is_refused(tiled, labels, tmp_path):
    """Slides without a split beside slides with one would silently train on nothing."""
    cohort, tiles = tiled
    partial = labels.copy()
    partial.loc[partial["slide"].isin(["pcam-train-001", "pcam-train-002"]), "split"] = ""
    partial.to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(DataError, match=r"2 slide\(s\) without a split.*pcam-train-001, pcam-train-002"):
        read_tile_cohort(tiles, tmp_path / "partial.csv")


# -- loading ------------------------------------------------------------------------------------------


def test_thread_and_process_loaders_give_identical_tile_batches(tiled):
    """In order, and drawn by the slide sampler training uses (its generator is its own, so the
    loader kind does not change what is drawn)."""
    cohort, tiles = tiled
    manifest = read_tile_cohort(tiles, cohort / "labels.csv").manifest
    ds = PatchDataset(manifest, image_px=64)  # resized on the way
    slides = manifest.frame["slide"].to_numpy()
    for sampled in (False, True):
        batches = []
        for threads in (True, False):
            sampler = SlideEpochSampler(slides, ds.labels, 5, balance_classes=True, seed=3) if sampled else None
            loader = make_loader(ds, 16, 2, sampler=sampler, persistent=False, threads=threads)
            assert isinstance(loader, ThreadLoader) is threads
            batches.append(list(loader))
        a, b = batches
        assert len(a) == len(b) == -(-(len(set(slides)) * 5 if sampled else len(ds)) // 16)
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch_equal(xa, xb) and torch_equal(ya, yb)
        if not sampled:
            assert torch_equal(torch.cat([x for x, _ in a]), ds.__getitems__(list(range(len(ds)))).images)


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_memory_cache_holds_the_same_tiles(tiled):
    cohort, tiles = tiled
    manifest = read_tile_cohort(tiles, cohort / "labels.csv").manifest
    plain = PatchDataset(manifest, image_px=COHORT_TILE_PX)
    cached = PatchDataset(manifest, image_px=COHORT_TILE_PX, cache="memory")
    rows = list(range(0, len(plain), 3))
    assert torch_equal(plain.__getitems__(rows).images, cached.__getitems__(rows).images)
    assert cached.decodes_without_gil()
    for x, _ in make_loader(cached, 32, 2, threads=True):  # thread workers read the shared cache
        assert x.shape[1:] == (3, COHORT_TILE_PX, COHORT_TILE_PX)
