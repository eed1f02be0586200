"""SlideReader backends on real slides (CMU svs, kidney TIFF) and synthetic pyramids/images."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from histoflow.core.errors import ConfigError, SlideReadError
from histoflow.slide import ArraySlide, SlideReader, open_slide
from histoflow.slide.synthetic import write_synthetic_slide
from tests.conftest import need_data


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    """A 3-level JPEG pyramid, levels in the main IFD chain, 0.25 um/px."""
    path = tmp_path_factory.mktemp("pyr") / "pyr.tif"
    return write_synthetic_slide(path, 3000, 2000, mpp=0.25, tile_px=256, min_level_px=600, seed=3)


def test_cmu_svs_metadata_and_regions():
    path = need_data("wsi", "cmu-1-small-region.svs")
    with open_slide(path) as s:
        assert isinstance(s, SlideReader)
        assert s.backend == "openslide" and s.vendor == "aperio"
        assert s.dimensions == (2220, 2967) and s.level_count == 1
        assert s.mpp == pytest.approx(0.499) and s.objective_power == 20
        assert {"label", "macro", "thumbnail"} <= set(s.associated_images)
        region = s.read_region((1000, 1500), 0, (256, 128))
        assert region.shape == (128, 256, 3) and region.dtype == np.uint8
        assert region.std() > 10  # tissue, not a blank
        thumb = s.thumbnail(300)
        assert max(thumb.shape[:2]) == 300 and thumb.shape[2] == 3
        info = s.info()
        assert info["levels"][0]["magnification"] == 20 and info["mpp_source"] == "metadata"


def test_aperio_level0_is_decoded_by_tifffile_only_when_the_pixels_are_openslides(monkeypatch):
    """open_slide hands level 0 of an Aperio JPEG slide to tifffile (~3x cheaper than OpenSlide's
    region reads) only after a probe decodes identically; the whole level must then be equal."""
    from histoflow.slide.tiff import TiffSlide

    path = need_data("wsi", "cmu-1-small-region.svs")
    with open_slide(path) as s:
        assert s.backend == "openslide" and s.decoder == "tifffile" and s.mpp == pytest.approx(0.499)
        w, h = s.dimensions
        np.testing.assert_array_equal(s.read_region((0, 0), 0, (w, h)), s.openslide_region(0, 0, 0, w, h))
        edge = s.read_region((w - 50, h - 30), 0, (100, 60))  # past the edge: white glass, as OpenSlide
        np.testing.assert_array_equal(edge, s.openslide_region(w - 50, h - 30, 0, 100, 60))
    assert open_slide(path, backend="openslide").decoder == "openslide"  # asked for OpenSlide: OpenSlide
    real = TiffSlide.read_region
    monkeypatch.setattr(TiffSlide, "read_region", lambda self, *a: real(self, *a) // 2 * 2)  # a decoder that differs
    assert open_slide(path).decoder == "openslide"


def test_plain_tiff_goes_to_tifffile_and_warns_about_mpp(caplog):
    import tifffile

    path = need_data("wsi", "kidney-48-5.tif")
    with caplog.at_level(logging.WARNING):
        s = open_slide(path)
    assert s.backend == "tifffile" and s.mpp is None
    assert "no microns-per-pixel" in caplog.text and "kidney-48-5" in caplog.text
    full = tifffile.imread(path)
    np.testing.assert_array_equal(s.read_region((100, 50), 0, (300, 200)), full[50:250, 100:400])
    edge = s.read_region((1400, 800), 0, (200, 200))  # beyond the image: white glass
    np.testing.assert_array_equal(edge[:101, :93], full[800:, 1400:])
    assert (edge[150:, 150:] == 255).all()
    assert open_slide(path, mpp=0.5).mpp == 0.5  # explicit override, never a guess
    with pytest.raises(SlideReadError, match="kidney-48-5"):
        open_slide(path, backend="openslide")


def test_pyramid_openslide_and_tifffile_agree(pyramid):
    a, b = open_slide(pyramid, backend="openslide"), open_slide(pyramid)
    assert a.backend == "openslide" and b.backend == "tifffile"  # auto: tifffile for generic tiled TIFF
    assert a.level_count == b.level_count == 3
    assert a.level_dimensions == b.level_dimensions == [(3000, 2000), (1500, 1000), (750, 500)]
    assert a.level_downsamples == pytest.approx([1, 2, 4]) and b.mpp == pytest.approx(0.25) == a.mpp
    for level in range(3):
        ra = a.read_region((700, 500), level, (300, 200)).astype(int)
        rb = b.read_region((700, 500), level, (300, 200)).astype(int)
        assert np.abs(ra - rb).mean() < 1.0  # same JPEG data, two decoders
    assert a.best_level_for_downsample(3.0) == 1 and a.best_level_for_downsample(0.5) == 0


def test_image_and_array_slides(tmp_path):
    import cv2

    arr = np.full((300, 400, 3), 240, np.uint8)
    arr[100:200, 100:300] = (200, 100, 150)
    cv2.imwrite(str(tmp_path / "field.png"), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "field.jpg"), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
    png = open_slide(tmp_path / "field.png", mpp=0.5)
    assert png.backend == "image" and png.dimensions == (400, 300) and png.mpp == 0.5
    np.testing.assert_array_equal(png.read_region((90, 90), 0, (20, 20)), arr[90:110, 90:110])
    assert open_slide(tmp_path / "field.jpg").backend == "image"
    pyr = ArraySlide(arr, mpp=0.25, slide_id="montage", levels=3)
    assert pyr.level_dimensions == [(400, 300), (200, 150), (100, 75)]
    assert pyr.read_region((200, 120), 1, (10, 10)).shape == (10, 10, 3)
    assert pickle.loads(pickle.dumps(pyr)).slide_id == "montage"


def test_downsampled_view_is_read_block_by_block():
    import cv2

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (400, 600, 3), dtype=np.uint8)
    s = ArraySlide(arr, mpp=0.5)
    whole = cv2.resize(arr, (150, 100), interpolation=cv2.INTER_AREA)
    # blocks of 100 px (aligned to the 4x downsample): same pixels as one big resize
    np.testing.assert_array_equal(s.read_downsampled(4, block_px=100), whole)
    assert s.thumbnail(300).shape == (200, 300, 3)


def test_readers_pickle_as_a_recipe_not_a_handle(pyramid):
    s = open_slide(pyramid, mpp=0.3)
    t = pickle.loads(pickle.dumps(s))
    assert t is not s and t.mpp == 0.3 and t.backend == s.backend
    np.testing.assert_array_equal(s.read_region((0, 0), 2, (64, 64)), t.read_region((0, 0), 2, (64, 64)))


def test_an_aperio_reader_pickles_with_its_tifffile_level0():
    """A worker that receives a pickled Aperio reader decodes level 0 as the sender did (tifffile,
    after the same pixel probe), not with OpenSlide's ~3x slower region reads."""
    s = open_slide(need_data("wsi", "cmu-1-small-region.svs"))
    assert s.decoder == "tifffile"
    t = pickle.loads(pickle.dumps(s))
    assert t.decoder == "tifffile" and t.mpp == s.mpp and t.backend == "openslide"
    np.testing.assert_array_equal(s.read_region((500, 700), 0, (300, 200)), t.read_region((500, 700), 0, (300, 200)))
    s.close()
    t.close()


def test_bad_files_raise_slide_read_errors_naming_the_file(tmp_path, pyramid):
    with pytest.raises(SlideReadError, match="missing.svs: slide file not found"):
        open_slide(tmp_path / "missing.svs")
    (tmp_path / "notes.svs").write_text("not a slide\n")
    with pytest.raises(SlideReadError, match="notes.svs: unsupported"):
        open_slide(tmp_path / "notes.svs")
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(SlideReadError, match="empty.tif: slide file is empty"):
        open_slide(tmp_path / "empty.tif")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(pyramid.read_bytes()[: pyramid.stat().st_size // 3])
    with pytest.raises(SlideReadError, match="truncated.tif"):
        s = open_slide(truncated)
        s.read_region((0, 0), 0, (3000, 2000))
    with pytest.raises(ConfigError, match="unknown slide backend"):
        open_slide(pyramid, backend="vips")
    with pytest.raises(SlideReadError, match="level 5 does not exist"):
        open_slide(pyramid).read_region((0, 0), 5, (10, 10))


def test_info_command():

    from histoflow.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["info", str(need_data("wsi", "cmu-1-small-region.svs"))])
    assert res.exit_code == 0, res.output
    assert "aperio" in res.output and "0.499" in res.output and "label" in res.output
    res = runner.invoke(app, ["info", str(need_data("wsi", "kidney-48-5.tif")), "--json", "--slide-mpp", "0.5"])
    assert res.exit_code == 0 and '"mpp": 0.5' in res.output
    res = runner.invoke(app, ["info", "/nonexistent/slide.svs"])
    assert res.exit_code == 2 and "slide.svs: slide file not found" in res.output
