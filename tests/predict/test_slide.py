"""Slide-level prediction: geometry of the probability grid, aggregation, heatmaps/GeoJSON,
bad input (resolution, no tissue, corrupt region, interruption) and the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from histoflow.checkpoint import Checkpoint
from histoflow.config.slides import AggregateConfig, SlidePredictConfig
from histoflow.core.errors import ConfigError
from histoflow.models.classifier import Classifier
from histoflow.predict.aggregate import aggregate, all_scores
from histoflow.predict.checkpoint_info import checkpoint_resolution
from histoflow.predict.slide import Predictor, predict_slide, predict_slides
from histoflow.slide import ArraySlide
from histoflow.slide.montage import write_pyramid_tiff
from histoflow.tiling.readers import register_in_memory
from tests.conftest import need_data

TILE = 32
DARK, LIGHT = (100, 40, 130), (200, 120, 180)  # "tumour" (dense, dark) and "normal" (pale) tissue


class DarkBackbone(nn.Module):
    """Feature = darkness of the tile: a known, exact model so the grid can be checked cell by cell."""

    num_features = 2

    def forward(self, x):
        d = 1 - x.mean(dim=(1, 2, 3))  # Preprocess with mean 0, std 1 leaves x in [0, 1]
        return torch.stack([d, 1 - d], 1)


def dark_model() -> Classifier:
    m = Classifier(DarkBackbone(), 2, mean=(0, 0, 0), std=(1, 1, 1))
    with torch.no_grad():
        m.head[1].weight[:] = torch.tensor([[40.0, 0.0]])
        m.head[1].bias[:] = -16.0  # positive when darkness > 0.4
    return m.eval()


def predictor(cfg=None, mpp=1.0) -> Predictor:
    cfg = cfg or SlidePredictConfig(mpp=mpp, batch_size=16, workers=2)
    ckpt = Checkpoint("<dark model>", {"class_names": ["normal", "tumour"], "num_classes": 2, "image_px": TILE})
    return Predictor(dark_model(), ckpt, cfg, TILE, mpp, "dark-v1", torch.device("cpu"))


def pattern_image(pattern: np.ndarray, px: int = TILE) -> np.ndarray:
    """-1 glass, 0 pale tissue, 1 dark tissue; a little texture so nothing is perfectly flat."""
    rng = np.random.default_rng(0)
    img = np.full((pattern.shape[0] * px, pattern.shape[1] * px, 3), 245, np.uint8)
    for (r, c), v in np.ndenumerate(pattern):
        if v >= 0:
            col = np.array(DARK if v == 1 else LIGHT, np.int16)
            img[r * px : (r + 1) * px, c * px : (c + 1) * px] = np.clip(col + rng.integers(-8, 9, (px, px, 3)), 0, 255)
    return img


PATTERN = np.array(
    [
        [-1, -1, 0, 0, 0, 0, 0, -1],
        [-1, 0, 1, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [-1, 0, 0, 1, 0, 0, 0, -1],
    ]
)


@pytest.fixture
def pattern_slide():
    s = ArraySlide(pattern_image(PATTERN), mpp=1.0, slide_id="pattern")
    register_in_memory(s)
    return s


# -- aggregation ------------------------------------------------------------------------------------
def test_aggregate_rules():
    p = np.array([0.1, 0.9, 0.2, 0.8, np.nan])
    assert aggregate(p, "max") == pytest.approx(0.9)
    assert aggregate(p, "mean") == pytest.approx(0.5)
    assert aggregate(p, "topk_mean", k=2) == pytest.approx(0.85)
    assert aggregate(p, "topk_mean", k=99) == pytest.approx(0.5)  # k larger than the slide: all tiles
    assert aggregate(p, "fraction", threshold=0.5) == pytest.approx(0.5)
    assert aggregate(np.array([]), "max") is None  # no tiles: no score, not 0
    assert set(all_scores(p, AggregateConfig())) == {"max", "mean", "topk_mean", "fraction"}
    with pytest.raises(ConfigError, match="method: Input should be 'max', 'mean', 'topk_mean' or 'fraction'"):
        AggregateConfig(method="median")


def test_checkpoint_resolution_never_guesses_mpp():
    meta = {"image_px": 96, "run_config": {}}
    with pytest.raises(ConfigError, match=r"pcam.pt.*--mpp.*0\.972"):
        checkpoint_resolution(Checkpoint("pcam.pt", meta), None)
    assert checkpoint_resolution(Checkpoint("pcam.pt", meta), 0.972) == (96, 0.972)
    assert checkpoint_resolution(Checkpoint("pcam.pt", {**meta, "mpp": 0.5, "tile_px": 256}), None) == (256, 0.5)


def test_a_model_trained_on_otherwise_resampled_tiles_is_warned_about(caplog):
    from histoflow.tiling.read import PIXELS_VERSION

    meta = {"image_px": 96, "run_config": {}, "mpp": 0.972}
    with caplog.at_level("WARNING"):
        checkpoint_resolution(Checkpoint("tiles.pt", {**meta, "pixels_version": PIXELS_VERSION}), None)
        checkpoint_resolution(Checkpoint("patches.pt", meta), None)  # not trained on tiles: nothing to say
    assert caplog.records == []
    with caplog.at_level("WARNING"):
        checkpoint_resolution(Checkpoint("old.pt", {**meta, "pixels_version": PIXELS_VERSION - 1}), None)
    assert (
        f"old.pt: trained on tiles that another histoflow version resampled (pixels version {PIXELS_VERSION - 1}"
        in caplog.text
    )


# -- the grid reproduces the slide ---------------------------------------------------------------------
def test_grid_heatmap_and_geojson_reproduce_the_pattern(tmp_path, pattern_slide):
    cfg = SlidePredictConfig(
        mpp=1.0,
        batch_size=8,
        workers=2,
        tissue_threshold=0.5,
        aggregate=AggregateConfig(method="fraction", threshold=0.5),
    )
    rep = predict_slide(predictor(cfg), pattern_slide.path, tmp_path)
    d = tmp_path / "pattern"
    grid = np.load(d / "probabilities.npy")
    assert grid.shape == PATTERN.shape + (2,)
    tissue = PATTERN >= 0
    assert np.isfinite(grid[..., 1][tissue]).all() and np.isnan(grid[..., 1][~tissue]).all()
    np.testing.assert_array_equal(grid[..., 1][tissue] > 0.5, PATTERN[tissue] == 1)
    assert rep["status"] == "complete" and rep["tiles"]["scored"] == tissue.sum()
    assert rep["score"] == pytest.approx((PATTERN == 1).sum() / tissue.sum())
    t = pq.read_table(d / "tiles.parquet").to_pydict()
    assert t["tile_id"][0] == "pattern_64_0_32px_1mpp" and set(t) >= {"x", "y", "prob_normal", "prob_tumour"}
    regions = json.loads((d / "regions.geojson").read_text())["features"]
    assert len(regions) == 3  # the 2x2 block, the vertical pair, the single cell
    assert sorted(f["properties"]["measurements"]["tiles"] for f in regions) == [1, 2, 4]
    block = max(regions, key=lambda f: f["properties"]["measurements"]["tiles"])
    xs, ys = zip(*block["geometry"]["coordinates"][0])
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((64, 128, 32, 96), abs=3)
    assert block["properties"]["objectType"] == "annotation"
    # every scored tile is a QuPath detection with its probabilities as measurements
    tiles = json.loads((d / "tiles.geojson").read_text())["features"]
    assert len(tiles) == tissue.sum() and {f["properties"]["objectType"] for f in tiles} == {"detection"}
    for f in tiles:
        (x0, y0), *_ = f["geometry"]["coordinates"][0]
        r, c = int(y0) // TILE, int(x0) // TILE
        props = f["properties"]
        assert props["classification"]["name"] == ("tumour" if PATTERN[r, c] == 1 else "normal")
        assert set(props["measurements"]) == {"P(normal)", "P(tumour)", "tissue fraction"}
        assert props["measurements"]["P(tumour)"] == pytest.approx(grid[r, c, 1], abs=1e-6)
    assert (d / "heatmap.png").stat().st_size > 10_000


def test_overlapping_tiles_and_no_overlap_agree(tmp_path, pattern_slide):
    cfg = SlidePredictConfig(mpp=1.0, overlap_px=16, batch_size=8, workers=1, tissue_threshold=0.9)
    rep = predict_slide(predictor(cfg), pattern_slide.path, tmp_path)
    assert rep["grid"]["stride_px0"] == 16 and rep["tiles"]["scored"] > PATTERN.size


# -- bad input -------------------------------------------------------------------------------------------
def test_slide_without_tissue_gives_an_empty_result(tmp_path):
    s = register_in_memory(ArraySlide(np.full((256, 320, 3), 244, np.uint8), mpp=1.0, slide_id="glass"))
    rep = predict_slide(predictor(), s, tmp_path)
    assert rep["status"] == "no_tissue" and rep["score"] is None and rep["tiles"]["scored"] == 0
    assert pq.read_table(tmp_path / "glass" / "tiles.parquet").num_rows == 0
    assert json.loads((tmp_path / "glass" / "regions.geojson").read_text())["features"] == []
    assert (tmp_path / "glass" / "heatmap.png").exists()


def test_resolution_the_slide_cannot_provide(tmp_path, pattern_slide):
    coarse = register_in_memory(ArraySlide(pattern_image(PATTERN), mpp=2.0, slide_id="coarse"))
    with pytest.raises(ConfigError, match=r"coarse.*needs 1 um/px.*2 um/px.*--allow-resample"):
        predict_slide(predictor(), coarse, tmp_path)
    cfg = SlidePredictConfig(mpp=1.0, allow_resample=True, workers=1, tissue_threshold=0.5)
    rep = predict_slide(predictor(cfg), coarse, tmp_path)
    assert rep["resampled"] and rep["grid"]["region_px0"] == TILE // 2 and rep["tiles"]["scored"] > 0


def _corrupt_some_tiles(path, n_tiles=2):
    """Smash the JPEG data of a few level-0 TIFF tiles in the middle of the slide."""
    import tifffile

    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        mid = len(page.dataoffsets) // 2
        for off, n in list(zip(page.dataoffsets, page.databytecounts))[mid : mid + n_tiles]:
            data[off : off + n] = b"\xff\x00" * (n // 2) + b"\x00" * (n % 2)
    path.write_bytes(bytes(data))


def test_corrupt_region_is_skipped_counted_and_reported(tmp_path):
    img = pattern_image(np.tile(PATTERN, (2, 2)))  # 512x384 px, TIFF tiles of 64 px
    path = write_pyramid_tiff(tmp_path / "bad.tif", img, mpp=1.0, tile_px=64, min_level_px=128)
    _corrupt_some_tiles(path)
    rep = predict_slides_one(tmp_path, path)
    assert rep["status"] == "complete"
    assert 0 < rep["tiles"]["skipped_read_errors"] < rep["tiles"]["planned"]
    assert rep["tiles"]["scored"] + rep["tiles"]["skipped_read_errors"] == rep["tiles"]["planned"]
    assert rep["errors"] and rep["errors"][0].startswith("bad_")


def predict_slides_one(tmp_path, path):
    from histoflow.predict.slide import predict_slide as one

    return one(predictor(SlidePredictConfig(mpp=1.0, workers=2, batch_size=8)), str(path), tmp_path / "out")


def test_interrupted_run_resumes_without_recomputing(tmp_path, monkeypatch):
    paths = [
        write_pyramid_tiff(
            tmp_path / f"s{i}.tif", pattern_image(np.roll(PATTERN, i, 1)), mpp=1.0, tile_px=64, min_level_px=128
        )
        for i in range(2)
    ]
    pred = predictor()
    out = tmp_path / "out"
    for p in paths:
        predict_slide(pred, p, out)
    (out / "s1" / "slide.json").unlink()  # as if interrupted while writing s1
    before = os.stat(out / "s0" / "tiles.parquet").st_mtime_ns
    reps = [predict_slide(pred, p, out) for p in paths]
    assert reps[0].get("resumed") and not reps[1].get("resumed")
    assert os.stat(out / "s0" / "tiles.parquet").st_mtime_ns == before
    # more reader threads or bigger batches change the speed, not the result: still done
    assert predict_slide(predictor(SlidePredictConfig(mpp=1.0, workers=1, batch_size=7)), paths[0], out).get("resumed")
    # other settings: the old result does not count as done
    pred2 = predictor(SlidePredictConfig(mpp=1.0, aggregate=AggregateConfig(method="max")))
    assert not predict_slide(pred2, paths[0], out).get("resumed")
    # outputs made from pixels another resampling produced (tiling.read.PIXELS_VERSION): redone
    assert predict_slide(pred, paths[1], out).get("resumed")
    monkeypatch.setattr("histoflow.predict.slide.PIXELS_VERSION", -1)
    assert not predict_slide(pred, paths[1], out).get("resumed")


def test_tiles_from_an_existing_tiling_run(tmp_path):
    from histoflow.tiling import TileConfig, extract_tiles

    path = write_pyramid_tiff(tmp_path / "t.tif", pattern_image(PATTERN), mpp=1.0, tile_px=64, min_level_px=128)
    extract_tiles(
        [path],
        tmp_path / "tiles",
        TileConfig(tile_px=TILE, mpp=1.0, image_format="png", whitespace_max=None),
        workers=1,
        progress=False,
    )
    a = predict_slide(predictor(), path, tmp_path / "stream")
    b = predict_slide(
        predictor(SlidePredictConfig(mpp=1.0, tiles_dir=str(tmp_path / "tiles"))), path, tmp_path / "shards"
    )
    ga, gb = np.load(tmp_path / "stream/t/probabilities.npy"), np.load(tmp_path / "shards/t/probabilities.npy")
    assert a["tiles"]["scored"] == b["tiles"]["scored"]
    np.testing.assert_allclose(ga, gb, atol=1e-5, equal_nan=True)  # PNG tiles: the same pixels
    with pytest.raises(ConfigError, match="64 px"):
        pred64 = predictor(SlidePredictConfig(mpp=1.0, tiles_dir=str(tmp_path / "tiles")))
        pred64.tile_px = 64
        predict_slide(pred64, path, tmp_path / "x")


# -- real slides and the CLI ------------------------------------------------------------------------------
def _tiny_checkpoint(path, mpp=None, class_names=("0", "1")):
    """An untrained simple_cnn saved like a PCam run: image_px 96, no mpp unless given."""
    from histoflow.checkpoint import save_checkpoint
    from histoflow.config import ModelConfig
    from histoflow.models.factory import create_model

    torch.manual_seed(0)
    cfg = ModelConfig(name="simple_cnn", params={"widths": [8, 16], "depth": 1})
    return save_checkpoint(
        path,
        create_model(cfg, 2),
        model_config=cfg.model_dump(),
        class_names=list(class_names),
        image_px=96,
        extra={"mpp": mpp} if mpp else None,
    )


def test_cli_predict_slide_on_the_real_slide(tmp_path):
    from typer.testing import CliRunner

    from histoflow.cli import app

    slide = need_data("wsi", "cmu-1-small-region.svs")
    ckpt = _tiny_checkpoint(tmp_path / "m.pt")
    runner = CliRunner()
    res = runner.invoke(app, ["predict-slide", str(slide), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--mpp" in res.output  # a PCam checkpoint stores no mpp
    res = runner.invoke(
        app,
        [
            "predict-slide",
            str(slide),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "o"),
            "--mpp",
            "0.972",
            "--aggregate",
            "max",
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "o" / "cmu-1-small-region" / "slide.json").read_text())
    assert rep["tiles"]["scored"] > 20 and rep["score_method"] == "max" and 0 <= rep["score"] <= 1
    assert rep["grid"]["region_px0"] == round(96 * 0.972 / 0.499)
    res = runner.invoke(
        app,
        [
            "predict-slide",
            str(slide),
            str(tmp_path / "missing.svs"),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "o"),
            "--mpp",
            "0.972",
            "--aggregate",
            "max",
        ],
    )
    assert res.exit_code == 1 and "resumed" in res.output and "missing.svs" in res.output
    # a checkpoint that stores its mpp needs no flag
    ckpt2 = _tiny_checkpoint(tmp_path / "m2.pt", mpp=0.972)
    res = runner.invoke(app, ["predict-slide", str(slide), "--checkpoint", str(ckpt2), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("mpp", [0.972, 0.5])
def test_streamed_tiles_are_the_tile_by_tile_openslide_pixels(mpp):
    """The fast path (a batch's neighbouring tiles cut from one region read, level 0 of an
    Aperio slide decoded by tifffile, batches filled in place) must give exactly the pixels
    and probabilities of the old path: each tile read alone by OpenSlide and resized
    (0.972 um/px: 187 px regions of the 0.499 um/px level -> 96 px; 0.5: no resizing), with
    reader threads and without (workers=0: read between batches, the CPU default on 2 cores)."""
    from histoflow.config import ModelConfig
    from histoflow.models.factory import create_model
    from histoflow.predict.model_loop import run_model
    from histoflow.predict.pipeline import SlideTileSource, stream_batches
    from histoflow.predict.tiles import open_reader_factory, plan_tiles
    from histoflow.slide import open_slide
    from histoflow.tiling.read import read_tile

    path = str(need_data("wsi", "cmu-1-small-region.svs"))
    cfg = SlidePredictConfig(mpp=mpp, tissue_threshold=0, overlap_px=48, batch_size=24, workers=2, max_tiles=150)
    with open_slide(path, backend="openslide") as old:  # OpenSlide decodes every pixel, one tile at a time
        plan = plan_tiles(old, 96, max(old.mpp, mpp), cfg)
        assert plan.read_px == (187 if mpp > 0.9 else 96)
        expected = np.stack([read_tile(old, s) for s in plan.specs])
    assert open_reader_factory(path, cfg)().decoder == "tifffile"  # what predict-slide streams through

    def source():
        return SlideTileSource(path, plan.specs, open_reader_factory(path, cfg))

    for workers in (2, 0):
        streamed = np.concatenate([b.images for b in stream_batches(source(), 96, cfg.batch_size, workers)])
        np.testing.assert_array_equal(streamed, expected)
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="simple_cnn", params={"widths": [8, 16], "depth": 1}), 2).eval()
    res = run_model(model, source(), 96, cfg, torch.device("cpu"))
    with torch.inference_mode():
        x = torch.from_numpy(expected).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        ref = model.probabilities(model.head(model.features(x))).numpy()
    assert res.indices.tolist() == list(range(len(plan.specs))) and not res.errors
    np.testing.assert_allclose(res.probs, ref, rtol=0, atol=1e-6)


def test_reader_threads_only_take_cores_a_cpu_model_leaves_free(monkeypatch):
    """On the CPU, reader threads beside a model whose threads fill every core preempt it
    (bench_slide_predict measured the contention costing more than the reading): by default
    there are only as many as the free cores, at most 2. Beside a GPU: 2. Asked for: as asked."""
    import os

    from histoflow.predict.pipeline import reader_threads

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert reader_threads(None, cpu) == 0 and reader_threads(None, gpu) == 2
        torch.set_num_threads(1)
        assert reader_threads(None, cpu) == 1
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
        assert reader_threads(None, cpu) == 2
        assert reader_threads(0, gpu) == 0 and reader_threads(3, cpu) == 3
    finally:
        torch.set_num_threads(threads)
    assert SlidePredictConfig().workers is None  # the default is the rule above, not a fixed number


def test_a_model_error_mid_stream_stops_the_reader_threads():
    """run_model closes its tile stream when the model raises, so no reader thread is left
    decoding into a slide the caller is about to close."""
    import threading

    from histoflow.config import ModelConfig
    from histoflow.models.factory import create_model
    from histoflow.predict.model_loop import run_model
    from histoflow.predict.pipeline import SlideTileSource
    from histoflow.predict.tiles import open_reader_factory, plan_tiles
    from histoflow.slide import open_slide

    path = str(need_data("wsi", "cmu-1-small-region.svs"))
    cfg = SlidePredictConfig(mpp=0.5, tissue_threshold=0, batch_size=8, workers=2, prefetch=4)
    with open_slide(path) as slide:
        plan = plan_tiles(slide, 96, 0.5, cfg)
    model = create_model(ModelConfig(name="simple_cnn", params={"widths": [8], "depth": 1}), 2).eval()
    calls = {"n": 0}
    features = model.features

    def failing(x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("model failed on batch 2")
        return features(x)

    model.features = failing
    source = SlideTileSource(path, plan.specs, open_reader_factory(path, cfg))
    try:
        run_model(model, source, 96, cfg, torch.device("cpu"))
    except RuntimeError as exc:  # checked while the error (and run_model's frame) is alive, as in
        assert "batch 2" in str(exc)  # a caller's `finally: source.close()`
        alive = [t.name for t in threading.enumerate() if t.name.startswith("tile-reader")]
    else:
        pytest.fail("the model's error should propagate")
    source.close()
    assert not alive, alive


@pytest.mark.slow
def test_pcam_model_heatmap_reproduces_a_montage_of_real_patches(tmp_path):
    """Train a small PCam model (a few minutes under load), stitch real held-out PCam patches
    into a pyramidal TIFF in a known pattern, and check that the heatmap finds the pattern."""
    from sklearn.metrics import roc_auc_score

    from histoflow.config import load_config
    from histoflow.slide.montage import montage_array
    from histoflow.train.fit import fit

    pcam = need_data("pcam")
    cfg = load_config(
        None,
        [
            f"data.path={pcam / 'train'}",
            "data.max_per_split=1500",
            "data.image_px=96",
            "model.name=simple_cnn",
            "model.params={widths: [16, 32, 64], depth: 1}",
            "train.epochs=2",
            "data.num_workers=0",
        ],
    )
    run = fit(cfg, tmp_path / "run")
    rows, cols = 10, 12
    yy, xx = np.mgrid[0:rows, 0:cols]
    pattern = ((xx - 3) ** 2 + (yy - 5) ** 2 < 8).astype(int)  # a tumour disc
    pattern[2:9, 8:10] = 1  # and a bar
    pattern[0, :] = -1  # a strip of glass
    pools = {k: sorted((pcam / "valid" / str(k)).glob("*.jpg")) for k in (0, 1)}  # never trained on
    img, _ = montage_array(pattern, pools, seed=1)
    slide = write_pyramid_tiff(tmp_path / "montage.tif", img, mpp=0.972, min_level_px=256)
    s = predict_slides(
        run / "checkpoints" / "best.pt",
        [slide],
        tmp_path / "pred",
        SlidePredictConfig(mpp=0.972, tissue_threshold=0.25),
        progress=False,
    )
    assert not s["failed"]
    grid = np.load(tmp_path / "pred" / "montage" / "probabilities.npy")[..., 1]
    seen = np.isfinite(grid)
    assert not (seen & (pattern < 0)).any() and seen.sum() > 0.4 * (pattern >= 0).sum()
    assert roc_auc_score(pattern[seen], grid[seen]) > 0.75


class _NumberedTiles:
    """A TileSource whose tile i is filled with i % 256, and whose listed tiles fail."""

    def __init__(self, n: int, bad: set[int]):
        self.n, self.bad = n, bad

    def __len__(self) -> int:
        return self.n

    def read(self, i: int) -> np.ndarray:
        if i in self.bad:
            raise OSError(f"tile {i} is corrupt")
        return np.full((8, 8, 3), i % 256, np.uint8)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("workers,prefetch", [(0, 4), (1, 1), (3, 2), (3, 8)])
def test_stream_batches_keeps_order_and_reports_each_bad_tile(workers, prefetch):
    """However many reader threads and batches ahead: source order, the bad tiles reported at
    their positions and left out of the images."""
    from histoflow.predict.pipeline import stream_batches

    batches = list(stream_batches(_NumberedTiles(50, {3, 17, 49}), 8, 16, workers, prefetch))
    assert [b.indices.tolist() for b in batches] == [
        [i for i in range(s, min(50, s + 16)) if i not in {3, 17, 49}] for s in range(0, 50, 16)
    ]
    for b in batches:
        assert b.images[:, 0, 0, 0].tolist() == b.indices.tolist()
    assert [(i, m) for b in batches for i, m in b.errors] == [(i, f"OSError: tile {i} is corrupt") for i in (3, 17, 49)]
