"""Which slides and overlays `histoflow view PATH...` finds, and reading each overlay."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from histoflow.core.errors import DataError
from histoflow.viewer import features, overlays
from histoflow.viewer.catalog import discover
from tests.viewer.conftest import SLIDE_ID


def by_name(entry) -> dict:
    return {(o.run, o.name): o for o in entry.overlays}


def test_every_output_attaches_to_its_slide(lab, lab_paths):
    cat = discover(lab_paths)
    assert sorted(cat.slides) == ["broken", SLIDE_ID] and cat.problems == []
    entry = cat.slides[SLIDE_ID]
    found = by_name(entry)
    assert set(found) == {
        ("preds", "P(tumour)"),
        ("preds", "regions P(tumour) >= 0.5"),
        ("preds", "tiles P(tumour) >= 0.5"),
        ("preds", "tile grid"),
        ("preds", "MIL attention / max"),
        ("tiles", "tissue mask"),
        ("tiles", "tile grid"),
        ("mitoses", "mitoses"),
        ("mitoses", "hotspot (2 mitoses)"),
        ("annotations", f"{SLIDE_ID}_bad"),
    }
    assert all(o.error is None for o in entry.overlays)
    assert [s["label"] for s in entry.scores] == ["attention_mil", "mitotic score (3 mitoses, hotspot 2)"]


def test_outputs_alone_bring_their_slides(lab):
    cat = discover([lab["preds"]])  # slide.json names the slide file
    assert list(cat.slides) == [SLIDE_ID] and cat.slides[SLIDE_ID].path == lab["slide"]
    cat = discover([lab["root"]])  # a study-like folder: everything below it, slides folder included
    assert sorted(cat.slides) == ["broken", SLIDE_ID]
    assert len(cat.slides[SLIDE_ID].overlays) == 10
    # a predict-slide folder given alone never shows its heatmap.png as a slide
    cat = discover([lab["preds"] / SLIDE_ID])
    assert list(cat.slides) == [SLIDE_ID]


def test_moved_slide_still_gets_its_outputs_and_missing_files_are_reported(lab, tmp_path):
    moved = tmp_path / "elsewhere" / lab["slide"].name
    moved.parent.mkdir()
    moved.symlink_to(lab["slide"])
    preds = tmp_path / "preds"
    shutil.copytree(lab["preds"], preds)
    report = json.loads((preds / SLIDE_ID / "slide.json").read_text())
    report["slide"] = "/no/such/place/cmu-1-small-region.svs"
    (preds / SLIDE_ID / "slide.json").write_text(json.dumps(report))
    (preds / SLIDE_ID / "regions.geojson").unlink()
    cat = discover([moved, preds])
    assert list(cat.slides) == [SLIDE_ID] and cat.slides[SLIDE_ID].error is None
    regions = by_name(cat.slides[SLIDE_ID])[("preds", "regions P(tumour) >= 0.5")]
    assert regions.error and "regions.geojson: file not found" in regions.error
    # without the slide, the entry says which file it looked for and who named it
    cat = discover([preds])
    assert "/no/such/place/cmu-1-small-region.svs: slide file not found" in cat.slides[SLIDE_ID].error
    assert "slide.json" in cat.slides[SLIDE_ID].error


def test_detections_table_of_images_and_loose_geojson(tmp_path, lab):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        from PIL import Image

        Image.fromarray(np.full((64, 80, 3), 200, np.uint8)).save(images / name)
    det = tmp_path / "det"
    det.mkdir()
    (det / "detections.csv").write_text(
        f"image,x,y,score,p_atypical\n{images / 'a.png'},10,20,0.9,\n{images / 'a.png'},30,40,0.6,0.7\n"
        f"{images / 'b.png'},5,5,0.8,\n"
    )
    (det / "detections.geojson").write_text('{"type": "FeatureCollection", "features": []}')  # the same, for QuPath
    (tmp_path / "stray.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    cat = discover([images, det, tmp_path / "stray.geojson"])
    assert sorted(cat.slides) == ["a", "b"]
    a = cat.slides["a"].overlays
    assert [(o.kind, o.name) for o in a] == [("detections", "detections")]
    pts = overlays.load(a[0]).features["points"]
    assert pts["x"] == [10.0, 30.0] and pts["value"] == [0.9, 0.6] and pts["label"] == ["mitosis", "atypical mitosis"]
    assert any("stray.geojson: no slide named like this" in p for p in cat.problems)


def test_each_overlay_reads(lab, lab_paths):
    entry = discover(lab_paths).slides[SLIDE_ID]
    found = by_name(entry)
    heat = overlays.load(found[("preds", "P(tumour)")])
    report = json.loads((lab["preds"] / SLIDE_ID / "slide.json").read_text())
    g = report["grid"]
    assert heat.values.shape == (g["rows"], g["cols"]) and heat.bounds == (
        g["x0"],
        g["y0"],
        g["cols"] * g["stride_px0"],
        g["rows"] * g["stride_px0"],
    )
    assert (
        np.nanmin(heat.values) >= 0
        and np.nanmax(heat.values) <= 1
        and np.isfinite(heat.values).sum() == report["tiles"]["scored"]
    )
    att = overlays.load(found[("preds", "MIL attention / max")])
    assert np.nanmax(att.values) == pytest.approx(1.0) and np.isfinite(att.values).sum() == report["tiles"]["scored"]
    mask = overlays.load(found[("tiles", "tissue mask")])
    assert mask.values.dtype == bool and 0.05 < mask.values.mean() < 0.95
    assert mask.bounds[2] == pytest.approx(2220, rel=0.02) and mask.bounds[3] == pytest.approx(2967, rel=0.02)
    grid = overlays.load(found[("tiles", "tile grid")]).features["boxes"]
    assert len(grid["x"]) > 0 and grid["size"] == pytest.approx(128 * 2.0 / 0.499, abs=1)
    pts = overlays.load(found[("mitoses", "mitoses")]).features
    assert (
        pts["count"] == 3
        and pts["value_name"] == "score"
        and pts["points"]["info"][1] == {"score": 0.7, "p_atypical": 0.8}
    )
    hot = overlays.load(found[("mitoses", "hotspot (2 mitoses)")]).features["polygons"][0]["rings"][0]
    assert hot[0:2] == [300.0, 400.0] and hot[2] - hot[0] == pytest.approx(1000 * 0.5**0.5 / 0.499)
    regions = overlays.load(found[("preds", "regions P(tumour) >= 0.5")]).features
    assert regions["count"] == len(json.loads((lab["preds"] / SLIDE_ID / "regions.geojson").read_text())["features"])
    assert regions["count"] == 0 or regions["value_name"] == "mean_probability"
    with pytest.raises(DataError, match="_bad.geojson: not valid JSON"):
        overlays.load(found[("annotations", f"{SLIDE_ID}_bad")])
    png = overlays.render(heat, "viridis", threshold=0.5)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_malformed_overlay_files_name_the_file(tmp_path):
    cases = {
        "notjson.geojson": ("{", "not valid JSON"),
        "list.geojson": ('{"type": "Nope"}', None),
        "badcoord.geojson": (
            '{"type": "Feature", "geometry": {"type": "Point", "coordinates": ["a", 1]}}',
            "finite numbers",
        ),
        "noprops.geojson": ('{"type": "FeatureCollection", "features": 3}', "'features' list"),
        "array.geojson": ("[1, 2]", "a feature must be an object"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        if message is None:  # an unknown geometry type is counted, not drawn
            assert features.read_geojson(tmp_path / name)["skipped"] == 1
            continue
        with pytest.raises(DataError, match=message) as err:
            features.read_geojson(tmp_path / name)
        assert name in str(err.value)


def test_qupath_dialects():
    doc = [
        {
            "type": "Feature",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [[[[0, 0], [10, 0], [10, 10], [0, 0]]], [[[20, 20], [30, 20], [30, 30]]]],
            },
            "properties": {
                "classification": {"name": "Tumor", "colorRGB": -3670016},
                "color": -3670016,
                "measurements": [{"name": "probability", "value": 0.8}],
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
            "properties": {"score": 0.3},
        },
        {"type": "Feature", "geometry": None, "properties": {}},
    ]
    out = features.from_geojson(doc)
    assert len(out["polygons"]) == 2 and out["polygons"][0]["value"] == 0.8 and out["polygons"][0]["color"] == "#c80000"
    assert out["points"]["value"] == [0.3, 0.3] and out["skipped"] == 1 and out["value_range"] == [0.3, 0.8]


def test_a_dicom_series_folder_is_one_slide(tmp_path):
    from tests.conftest import need_data

    series = need_data("wsi", "dicom-cmu-1-small-region")
    cat = discover([series])
    assert list(cat.slides) == ["dicom-cmu-1-small-region"] and cat.slides["dicom-cmu-1-small-region"].path == series
    shutil.copytree(series, tmp_path / "case-1")
    assert list(discover([tmp_path]).slides) == ["case-1"]  # a folder of series: one slide per series
