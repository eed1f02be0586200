"""Tile grids, extraction to Parquet shards, resume, failure reports, TileDataset and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from histoflow.core.errors import ConfigError, DataError
from histoflow.slide import ArraySlide, open_slide
from histoflow.slide.synthetic import write_synthetic_slide
from histoflow.tiling import TileConfig, extract_tiles, plan_slide, read_tile, tile_grid, tissue_mask
from histoflow.tiling.grid import resolve_geometry
from histoflow.tiling.local import LocalEngine
from tests.conftest import REPO, need_data

CMU = ("wsi", "cmu-1-small-region.svs")


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    return write_synthetic_slide(
        tmp_path_factory.mktemp("pyr") / "pyr.tif", 3000, 2000, mpp=0.25, tile_px=256, min_level_px=600, seed=3
    )


def _array_slide(levels=3):
    img = np.full((1536, 2048, 3), 242, np.uint8)
    img[300:1300, 400:1700] = (220, 140, 185)
    img[300:1300:7, 400:1700:5] = (120, 70, 160)
    return ArraySlide(img, mpp=0.25, slide_id="montage", levels=levels)


# -- configuration and geometry ------------------------------------------------------------------
def test_tile_config_validation():
    with pytest.raises(ConfigError, match="overlap_px"):
        TileConfig(tile_px=256, overlap_px=256)
    with pytest.raises(ConfigError, match="image_format"):
        TileConfig(image_format="webp")
    with pytest.raises(ConfigError, match="give one of"):
        TileConfig(mpp=0.5, magnification=20)
    assert TileConfig(tile_um=128, tile_px=256).target_mpp(0.25, 40, "s") == 0.5
    assert TileConfig(magnification=10).target_mpp(0.25, 40, "s") == 1.0
    assert TileConfig().mpp == 0.5  # the default resolution when none is asked for
    assert TileConfig().fingerprint() == TileConfig().fingerprint() != TileConfig(jpeg_quality=80).fingerprint()


def test_geometry_picks_the_level_and_resizes():
    s = _array_slide()
    # 0.5 um/px = level 1 exactly: read 256 px there, no resampling
    assert resolve_geometry(s, TileConfig(mpp=0.5)) == (0.5, 1, 256, 512, 512)
    # 0.75 um/px: level 1 (0.5) is the coarsest finer level; read 384 px and shrink
    assert resolve_geometry(s, TileConfig(mpp=0.75)) == (0.75, 1, 384, 768, 768)
    # overlap: stride in level-0 px is (tile_px - overlap) * downsample
    assert resolve_geometry(s, TileConfig(mpp=0.5, overlap_px=64))[4] == 384
    with pytest.raises(ConfigError, match="montage: requested 0.1 um/px is finer than the slide's level 0"):
        resolve_geometry(s, TileConfig(mpp=0.1))
    with pytest.raises(
        DataError, match="montage: a 256 px tile at 8 um/px covers 8192 level-0 px, larger than the slide"
    ):
        resolve_geometry(s, TileConfig(mpp=8.0))
    nompp = ArraySlide(np.zeros((64, 64, 3), np.uint8), slide_id="nompp")
    with pytest.raises(ConfigError, match="nompp: slide has no mpp metadata; pass --slide-mpp"):
        resolve_geometry(nompp, TileConfig())


def test_grid_keeps_tissue_tiles_with_deterministic_ids():
    s = _array_slide()
    cfg = TileConfig(mpp=0.5, tile_px=128, tissue_threshold=0.5)
    m = tissue_mask(s.read_downsampled(16), 16, mpp=s.mpp)
    g = tile_grid(s, m, cfg)
    assert g.n_candidates == (2048 // 256) * (1536 // 256) and len(g.specs) + g.rejected_tissue == g.n_candidates
    for spec in g.specs:  # every kept tile lies mostly inside the tissue block
        assert 300 - 128 <= spec.y <= 1300 and 400 - 128 <= spec.x <= 1700
    first = g.specs[0]
    assert first.tile_id == f"montage_{first.x}_{first.y}_128px_0.5mpp"
    assert read_tile(s, first).shape == (128, 128, 3)
    again = tile_grid(s, m, cfg)
    assert [t.tile_id for t in again.specs] == [t.tile_id for t in g.specs]


# -- extraction on real data ------------------------------------------------------------------------
def test_cmu_extraction_shards_manifest_reports(tmp_path):
    slide = need_data(*CMU)
    cfg = TileConfig(tile_px=256, mpp=0.5, tiles_per_shard=10)
    summary = extract_tiles([slide], tmp_path, cfg, engine=LocalEngine(workers=2, progress=False, min_pool_tiles=0))
    report = json.loads((tmp_path / "slides" / "cmu-1-small-region" / "report.json").read_text())
    assert report["status"] == "complete" and report["kept"] == summary["tiles_kept"] > 10
    assert report["candidates"] == report["kept"] + sum(report["rejected"].values())
    assert report["slide"]["mpp"] == pytest.approx(0.499) and report["worker_maxrss_mb"] < 1024
    manifest = pq.read_table(tmp_path / "manifest.parquet").to_pandas()
    assert len(manifest) == report["kept"] and manifest["tile_id"].is_unique
    assert all(t.startswith("cmu-1-small-region_") and t.endswith("_256px_0.5mpp") for t in manifest["tile_id"])
    shards = sorted((tmp_path / "shards" / "cmu-1-small-region").glob("part-*.parquet"))
    assert len(shards) == report["shards"] == -(-report["kept"] // 10) or len(shards) >= 2
    assert not list(tmp_path.rglob(".*tmp*"))  # atomic writes leave no temporaries
    png = (tmp_path / "slides" / "cmu-1-small-region" / "thumbnail.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # pixels: the encoded tile decodes to the tile read directly (JPEG: close)
    from histoflow.core.images import decode_bytes

    row = pq.read_table(shards[0]).slice(0, 1).to_pylist()[0]
    direct = read_tile(open_slide(slide), plan_slide(str(slide), cfg).specs[0])
    assert np.abs(decode_bytes(row["image"], "t").astype(int) - direct).mean() < 8  # JPEG q90, 4:2:0


def test_png_tiles_are_lossless_and_loop_equals_pool(tmp_path):
    slide = need_data(*CMU)
    # small shards: the pool takes its shard-per-task path (workers write shards); the loop is in-process
    cfg = TileConfig(tile_px=128, mpp=1.0, image_format="png", tiles_per_shard=4)
    extract_tiles([slide], tmp_path / "loop", cfg, workers=1, progress=False)
    small = LocalEngine(workers=2, progress=False)
    extract_tiles([slide], tmp_path / "small", cfg, engine=small)
    assert not small.pool_started  # a few hundred tiles: cheaper in-process than starting a pool
    engine = LocalEngine(workers=2, progress=False, min_pool_tiles=0)
    pool = extract_tiles([slide], tmp_path / "pool", cfg, engine=engine)
    assert engine.pool_started and pool["reports"]["cmu-1-small-region"]["shards"] >= 6
    a = pq.read_table(tmp_path / "loop" / "manifest.parquet")
    b = pq.read_table(tmp_path / "pool" / "manifest.parquet")
    assert a.equals(b) and a.equals(pq.read_table(tmp_path / "small" / "manifest.parquet"))
    from histoflow.core.images import decode_bytes

    spec = plan_slide(str(slide), cfg).specs[3]
    shard = pq.read_table(tmp_path / "pool" / "shards" / "cmu-1-small-region" / "part-00000.parquet").to_pylist()
    row = next(r for r in shard if r["tile_id"] == spec.tile_id)
    np.testing.assert_array_equal(decode_bytes(row["image"], "t"), read_tile(open_slide(slide), spec))


def test_resume_skips_complete_slides_and_finished_shards(tmp_path, pyramid):
    cfg = TileConfig(tile_px=64, mpp=1.0, tiles_per_shard=4)
    first = extract_tiles([pyramid], tmp_path, cfg, workers=1, progress=False)
    report = tmp_path / "slides" / "pyr" / "report.json"
    mtime = report.stat().st_mtime_ns
    second = extract_tiles([pyramid], tmp_path, cfg, workers=1, progress=False)
    assert second["skipped"] == ["pyr"] and report.stat().st_mtime_ns == mtime
    # an interrupted run: report missing, one shard missing -> only that shard is redone
    report.unlink()
    shards = sorted((tmp_path / "shards" / "pyr").glob("part-*.parquet"))
    assert len(shards) >= 3
    shards[1].unlink()
    third = extract_tiles([pyramid], tmp_path, cfg, workers=1, progress=False)
    r = third["reports"]["pyr"]
    assert r["status"] == "complete" and r["resumed_shards"] == len(shards) - 1
    assert r["kept"] == first["reports"]["pyr"]["kept"]
    assert len(pq.read_table(tmp_path / "manifest.parquet")) == r["kept"]
    with pytest.raises(ConfigError, match="different config"):
        extract_tiles([pyramid], tmp_path, TileConfig(tile_px=64, mpp=1.0), workers=1, progress=False)


def test_a_folder_tiled_by_an_older_resampler_is_not_resumed_into(tmp_path, pyramid):
    """Tiles whose pixels came from another resampling (tiling.read.PIXELS_VERSION) are never
    mixed with this version's: such a folder is refused by name, and its reports are not
    taken for complete slides."""
    from histoflow.tiling.read import PIXELS_VERSION

    cfg = TileConfig(tile_px=64, mpp=1.0, tiles_per_shard=4)
    extract_tiles([pyramid], tmp_path, cfg, workers=1, progress=False)
    config, report = tmp_path / "config.json", tmp_path / "slides" / "pyr" / "report.json"
    assert json.loads(config.read_text())["pixels_version"] == PIXELS_VERSION
    assert json.loads(report.read_text())["pixels_version"] == PIXELS_VERSION
    # what histoflow wrote before the version was recorded
    for path in (config, report):
        older = json.loads(path.read_text())
        del older["pixels_version"]
        path.write_text(json.dumps(older))
    with pytest.raises(
        ConfigError, match=f"{tmp_path}: holds tiles made by another histoflow version.*pixels version 1"
    ):
        extract_tiles([pyramid], tmp_path, cfg, workers=1, progress=False)
    # a folder whose config is current but whose report is older: that slide is redone
    config.write_text(json.dumps({**json.loads(config.read_text()), "pixels_version": PIXELS_VERSION}))
    again = extract_tiles([pyramid], tmp_path, cfg, workers=1, progress=False)
    assert again["skipped"] == [] and json.loads(report.read_text())["pixels_version"] == PIXELS_VERSION


# -- bad input -----------------------------------------------------------------------------------------
def _corrupt_tiles(src, dst):
    """Copy a pyramid and smash the JPEG headers of every tile but the lowest level's: the
    tissue mask (read from the lowest level) works, every tile read fails."""
    import tifffile

    data = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        for page in tif.pages[:-1]:
            for off, n in zip(page.dataoffsets, page.databytecounts):
                data[off : off + min(n, 64)] = b"\x00" * min(n, 64)
    dst.write_bytes(bytes(data))
    return dst


def test_bad_slides_fail_alone_with_reports(tmp_path, pyramid):
    import cv2

    cmu = need_data(*CMU)
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "notes.svs").write_text("not a slide")
    (bad / "truncated.tif").write_bytes(pyramid.read_bytes()[:4000])
    blank = np.full((600, 800, 3), 243, np.uint8)
    cv2.imwrite(str(bad / "blank.png"), blank)
    cv2.imwrite(str(bad / "tiny.png"), np.full((40, 40, 3), 200, np.uint8))
    unreadable = _corrupt_tiles(pyramid, bad / "unreadable.tif")
    slides = [
        cmu,
        bad / "missing.svs",
        bad / "notes.svs",
        bad / "truncated.tif",
        bad / "blank.png",
        bad / "tiny.png",
        unreadable,
    ]
    cfg = TileConfig(tile_px=128, mpp=0.5, slide_mpp=None)
    s = extract_tiles(slides, tmp_path / "out", cfg, workers=2, progress=False)
    r = s["reports"]
    assert r["cmu-1-small-region"]["status"] == "complete" and r["cmu-1-small-region"]["kept"] > 0
    assert "missing.svs: slide file not found" in r["missing"]["error"]
    assert "notes.svs: unsupported or unreadable slide format" in r["notes"]["error"]
    assert "truncated.tif" in r["truncated"]["error"]
    assert "blank: slide has no mpp metadata" in r["blank"]["error"]
    assert r["unreadable"]["status"] == "failed" and "unreadable" in r["unreadable"]["error"]
    assert "cannot read region" in r["unreadable"]["tile_errors"][0]
    assert set(s["failed"]) == {"missing", "notes", "truncated", "blank", "tiny", "unreadable"}
    for sid in s["failed"]:  # every failure has its report on disk
        assert json.loads((tmp_path / "out" / "slides" / sid / "report.json").read_text())["status"] == "failed"
    # with the mpp supplied: no tissue is a warning and zero tiles, a too-small slide an error
    s2 = extract_tiles(
        [bad / "blank.png", bad / "tiny.png"],
        tmp_path / "out2",
        TileConfig(tile_px=128, mpp=0.5, slide_mpp=0.5),
        workers=1,
        progress=False,
    )
    assert s2["reports"]["blank"]["status"] == "complete" and s2["reports"]["blank"]["kept"] == 0
    assert "blank: no tile reaches the tissue threshold" in s2["reports"]["blank"]["warning"]
    assert (
        "tiny: a 128 px tile at 0.5 um/px covers 128 level-0 px, larger than the slide (40x40)"
        in s2["reports"]["tiny"]["error"]
    )
    # finer than level 0 names the slide
    s3 = extract_tiles([cmu], tmp_path / "out3", TileConfig(mpp=0.25), workers=1, progress=False)
    assert (
        "cmu-1-small-region: requested 0.25 um/px is finer than the slide's level 0"
        in s3["reports"]["cmu-1-small-region"]["error"]
    )
    # skip policy: unreadable tiles are counted, the slide completes
    s4 = extract_tiles(
        [unreadable],
        tmp_path / "out4",
        TileConfig(tile_px=128, mpp=0.25, on_tile_error="skip"),
        workers=1,
        progress=False,
    )
    r4 = s4["reports"]["unreadable"]
    assert r4["status"] == "complete" and r4["kept"] == 0 and r4["rejected"]["read_error"] > 0


def test_kidney_tiff_with_explicit_slide_mpp(tmp_path):
    kidney = need_data("wsi", "kidney-48-5.tif")
    cfg = TileConfig(tile_px=32, mpp=1.0, slide_mpp=1.0, tissue_threshold=0.3, min_tissue_um2=1000)
    s = extract_tiles([kidney], tmp_path, cfg, workers=1, progress=False)
    r = s["reports"]["kidney-48-5"]
    assert r["status"] == "complete" and r["slide"]["backend"] == "tifffile" and r["slide"]["mpp_source"] == "override"
    assert 0 < r["kept"] < 40  # one small fragment of tissue on a mostly empty field


# -- TileDataset ------------------------------------------------------------------------------------
def test_tile_dataset_with_slide_and_region_labels(tmp_path, pyramid):
    import torch

    from histoflow.tiling.dataset import TileDataset

    cfg = TileConfig(tile_px=64, mpp=1.0, tiles_per_shard=50)
    extract_tiles([pyramid, need_data(*CMU)], tmp_path / "t", cfg, workers=1, progress=False)
    unlabelled = TileDataset(tmp_path / "t")
    assert len(unlabelled) == len(pq.read_table(tmp_path / "t" / "manifest.parquet"))
    img, label = unlabelled[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 64, 64) and label == -1
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "slide,label,x,y,width,height\npyr,tumour,,,,\ncmu-1-small-region,normal,,,,\npyr,stroma,0,0,1500,2000\n"
    )
    ds = TileDataset(tmp_path / "t", labels=labels)
    assert ds.class_names == ["normal", "stroma", "tumour"]
    by_slide = {}
    for i in range(len(ds)):
        sid = ds.slide_ids[i].decode()
        x = int(ds.tile_id(i).split("_")[1])
        expected = "normal" if sid.startswith("cmu") else ("stroma" if x + 128 < 1500 else "tumour")
        assert ds.class_names[ds.labels[i]] == expected
        by_slide.setdefault(sid, set()).add(int(ds.labels[i]))
    assert by_slide["pyr"] == {1, 2}
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 64, 64) and y.dtype == torch.int64
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,label\npyr,a\npyr,b\n")
    with pytest.raises(DataError, match="two labels"):
        TileDataset(tmp_path / "t", labels=bad)


# -- CLI -------------------------------------------------------------------------------------------
def test_tile_command_exit_codes(tmp_path, pyramid):

    from histoflow.cli import app

    runner = CliRunner()
    args = ["tile", str(pyramid), "--out", str(tmp_path / "o"), "--tile-px", "128", "--mpp", "1", "--processes", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "1/1 slides complete" in res.output
    res = runner.invoke(app, args + [str(tmp_path / "gone.svs")])
    assert res.exit_code == 1 and "gone.svs: slide file not found" in res.output.replace("\n", "")
    res = runner.invoke(app, ["tile", str(pyramid), "--out", str(tmp_path / "o2"), "--overlap-px", "300"])
    assert res.exit_code == 2 and "overlap_px" in res.output


# -- a slide bigger than what we allow ourselves to hold in memory ----------------------------------------
@pytest.mark.slow
def test_big_lazily_written_tiff_is_read_by_regions(tmp_path):
    """A 16384 x 16384 RGB slide decodes to 805 MB; tiling it must stay far below that."""
    path = write_synthetic_slide(tmp_path / "big.tif", 16384, 16384, mpp=0.25, tile_px=512, seed=7)
    assert path.stat().st_size < 200e6
    script = textwrap.dedent(f"""
        import json
        from histoflow.tiling import TileConfig, extract_tiles
        from histoflow.tiling.memory import max_rss_mb
        s = extract_tiles([{str(path)!r}], {str(tmp_path / "o")!r}, TileConfig(tile_px=256, mpp=0.5), workers=1, progress=False)
        print(json.dumps({{"kept": s["tiles_kept"], "failed": s["failed"],
                          "rss_mb": max_rss_mb()}}))  # VmHWM: ru_maxrss would carry pytest's own peak
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["failed"] == [] and result["kept"] > 200
    assert result["rss_mb"] < 500, result  # < 2/3 of the decoded level 0 (805 MB), whatever the slide size


@pytest.mark.parametrize("case", ["cmu_openslide", "pyramid_tifffile", "pyramid_openslide_level1", "array"])
def test_block_reads_equal_tile_by_tile_reads(case, pyramid):
    """Neighbouring tiles are cut from one region read; the pixels must be exactly those of
    reading each tile alone, with overlap, at level 0 and on a lower pyramid level."""
    from histoflow.tiling.read import group_blocks, read_tiles

    if case == "cmu_openslide":
        slide, cfg = open_slide(need_data(*CMU)), TileConfig(tile_px=256, mpp=0.5, overlap_px=192)
    elif case == "pyramid_tifffile":
        slide, cfg = (
            open_slide(pyramid, backend="tifffile"),
            TileConfig(tile_px=128, mpp=0.25, overlap_px=32, tissue_threshold=0),
        )
    elif case == "pyramid_openslide_level1":
        slide, cfg = (
            open_slide(pyramid, backend="openslide"),
            TileConfig(tile_px=128, mpp=1.0, overlap_px=64, tissue_threshold=0),
        )
    else:
        slide, cfg = _array_slide(), TileConfig(tile_px=64, mpp=0.5, overlap_px=16, tissue_threshold=0)
    mask = tissue_mask(slide.read_downsampled(16), 16, mpp=slide.mpp)
    specs = tile_grid(slide, mask, cfg).specs[:120]
    blocks = group_blocks(slide, specs)
    assert len(blocks) < len(specs) / 4, "neighbouring tiles should share reads"
    if case == "pyramid_openslide_level1":
        assert specs[0].level > 0
    if case == "cmu_openslide":  # small: the level read for the mask is kept and tiles are cut from it
        assert slide.kept_level is not None and slide.kept_level[0] == specs[0].level
    blocked = read_tiles(slide, specs)
    fresh = slide if case == "array" else open_slide(slide.path, backend=slide.backend)
    assert fresh.kept_level is None or case == "array"
    for spec, img in zip(specs, blocked):  # against the backend's own read of each tile alone
        alone = fresh.read_region((spec.x, spec.y), spec.level, (spec.read_px, spec.read_px))
        if spec.read_px != spec.tile_px:
            alone = read_tile(fresh, spec)
        np.testing.assert_array_equal(img, alone, err_msg=spec.tile_id)


def test_a_failed_block_read_falls_back_to_single_tiles():
    from histoflow.core.errors import SlideReadError
    from histoflow.tiling.read import read_tiles

    slide = _array_slide(levels=1)
    cfg = TileConfig(tile_px=64, mpp=0.25, tissue_threshold=0)
    specs = tile_grid(slide, tissue_mask(slide.read_downsampled(16), 16, mpp=slide.mpp), cfg).specs[:6]
    real = slide.read_region
    bad_x = specs[2].x

    def flaky(xy, level, size):  # a corrupt stretch: any read touching tile 2 fails
        if xy[0] <= bad_x < xy[0] + size[0]:
            raise SlideReadError(f"corrupt at x={xy[0]}")
        return real(xy, level, size)

    slide.read_region = flaky
    out = read_tiles(slide, specs)
    assert isinstance(out[2], SlideReadError)
    assert all(isinstance(img, np.ndarray) for k, img in enumerate(out) if k != 2)
