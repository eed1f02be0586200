"""The slide verbs on a DICOM series folder (info, tile, predict-slide), a folder of series
folders, a fluorescence NDPI and bad folders: what a user passing these on the command line sees."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from tests.cli.test_slide_verbs import _error, _invoke
from tests.conftest import need_data
from tests.predict.test_slide import _tiny_checkpoint

DICOM = ("wsi", "dicom-cmu-1-small-region")
SVS = ("wsi", "cmu-1-small-region.svs")


def test_info_on_a_dicom_folder_and_on_bad_folders(tmp_path):
    result = _invoke("info", need_data(*DICOM), "--json")
    assert result.exit_code == 0, result.output
    meta = json.loads(result.output)
    assert meta["slide_id"] == "dicom-cmu-1-small-region" and meta["vendor"] == "dicom"
    assert meta["mpp"] == 0.499 and meta["levels"][0]["width"] == 2220
    assert meta["associated_images"] == ["label", "macro", "thumbnail"]
    table = _invoke("info", need_data(*DICOM))
    assert table.exit_code == 0 and "label, macro, thumbnail" in table.output
    (tmp_path / "empty").mkdir()
    _error(_invoke("info", tmp_path / "empty"), "empty", "empty folder")
    (tmp_path / "x.vsi").write_bytes(b"II*\x00" + bytes(64))
    _error(_invoke("info", tmp_path / "x.vsi"), "x.vsi", "_x_/", "missing")


def _tiles(out, slide_id):
    frame = pq.read_table(out / "manifest.parquet").to_pandas()
    rows = frame[frame.slide_id == slide_id].sort_values(["y", "x"])
    shard = pq.read_table(out / rows.shard.iloc[0]).to_pandas().set_index("tile_id")
    images = [np.asarray(Image.open(io.BytesIO(shard.loc[t, "image"]))) for t in rows.tile_id]
    return list(zip(rows.x, rows.y)), np.stack(images).astype(np.int16)


def test_tile_a_folder_of_dicom_series_gives_the_svs_tiles(tmp_path):
    """Each series folder of a cohort folder is one slide named by its folder; its tiles are the
    SVS's tiles (same grid, pixels within the JPEG re-encoding the conversion made)."""
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    shutil.copytree(need_data(*DICOM), cohort / "case-1")
    shutil.copy(need_data(*SVS), cohort / "cmu.svs")
    out = tmp_path / "tiles"
    result = _invoke("tile", cohort, "--out", out, "--processes", "1")
    assert result.exit_code == 0, result.output
    reports = {p.parent.name: json.loads(p.read_text()) for p in (out / "slides").glob("*/report.json")}
    assert set(reports) == {"case-1", "cmu"} and reports["case-1"]["path"] == str(cohort / "case-1")
    (xy_d, px_d), (xy_s, px_s) = _tiles(out, "case-1"), _tiles(out, "cmu")
    assert xy_d == xy_s and len(xy_d) > 20
    assert np.abs(px_d - px_s).mean() < 4  # measured 3.37 (worst tile 4.4): the conversion, then JPEG q90


def test_predict_slide_on_a_dicom_folder(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "p"
    result = _invoke("predict-slide", need_data(*DICOM), "--checkpoint", ckpt, "--out", out, "--mpp", "2")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "dicom-cmu-1-small-region" / "slide.json").read_text())
    assert report["tiles"]["scored"] > 0 and 0 <= report["score"] <= 1


def test_tile_a_fluorescence_ndpi_says_why_tissue_is_missed(tmp_path):
    out = tmp_path / "t"
    result = _invoke("tile", need_data("wsi", "nanozoomer-dapi-387.ndpi"), "--out", out, "--processes", "1")
    assert result.exit_code == 0, result.output  # read fine; the slide completes, with a warning
    report = json.loads((out / "slides" / "nanozoomer-dapi-387" / "report.json").read_text())
    assert report["status"] == "complete" and report["slide"]["mpp"] < 0.23
    assert "dark background" in report["warning"] and "fluorescence" in report["warning"]
    assert "fluorescence" in result.output


def test_detect_mitoses_takes_dicom_folders_as_slides(tmp_path):
    from histoflow.cli.mitosis import is_slide

    series = need_data(*DICOM)
    assert is_slide(series) and is_slide(series.parent)
    (tmp_path / "patches").mkdir()
    assert not is_slide(tmp_path / "patches")
