"""`histoflow mitosis windows --points`: your own point-annotated images, on real pixels.

The fields are stitched from real AMi-Br crops (2 x 2 crops of one slide each, every mitosis of
AMI-BR-all.csv that lies in a crop moved along with it), so the windows, candidates and labels are
those of real mitoses and real nuclei; one real colorectal stroma patch stands for a field without
mitoses. The annotations are written the two ways users have them: a points CSV and a MIDOG++-style
COCO JSON with both of its categories ("mitotic figure", "non-mitotic figure").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from histoflow.cli import app
from histoflow.core.errors import DataError
from histoflow.core.images import read_image
from histoflow.data.point_images import read_point_images
from histoflow.data.windows import valid_box
from tests.conftest import need_data

runner = CliRunner()
SLIDES = 6  # two of them get a second field, so grouping by slide is tested
GRID = 2  # crops per side of a field
CROP = 128


def _stitch(ami, crops: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """A GRID x GRID field of `crops` and every mitosis they show, in field pixels."""
    field = np.zeros((GRID * CROP, GRID * CROP, 3), np.uint8)
    rows = []
    for k, crop in enumerate(crops.itertuples(index=False)):
        ox, oy = (k % GRID) * CROP, (k // GRID) * CROP
        field[oy : oy + CROP, ox : ox + CROP] = read_image(crop.path)
        mine = ami.points.points[ami.points.points["image"] == crop.image]
        rows += [{"x": x + ox, "y": y + oy, "label": lbl} for x, y, lbl in zip(mine["x"], mine["y"], mine["label"])]
    return field, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    """fields/*.png, points.csv (image,slide,x,y,label,mpp) and midog.json (both categories)."""
    from histoflow.data.amibr import read_amibr
    from histoflow.preprocess.nuclei import nucleus_candidates

    ami = read_amibr(need_data("ami_br"))
    root = tmp_path_factory.mktemp("own")
    (root / "fields").mkdir()
    full = [bool(valid_box(read_image(p)) == (0, 0, CROP, CROP)) for p in ami.crops["path"].iloc[:600]]
    crops = ami.crops.iloc[:600][full]  # no black slide-edge fill inside a stitched field
    counts = crops.groupby("slide").size()
    slides = sorted(counts[counts >= 2 * GRID * GRID].index)[:2] + sorted(counts[counts >= GRID * GRID].index)[-4:]
    assert len(set(slides)) == SLIDES
    rows, images, annotations, imposters = [], [], [], []
    for s, slide in enumerate(slides):
        mine = crops[crops["slide"] == slide]
        for f in range(2 if s < 2 else 1):
            name = f"fields/s{s}_f{f}.png"
            field, pts = _stitch(ami, mine.iloc[f * GRID * GRID : (f + 1) * GRID * GRID])
            Image.fromarray(field).save(root / name)
            mpp = float(mine["mpp"].iloc[0])
            rows += [{"image": name, "slide": slide, "x": x, "y": y, "label": "mitosis", "mpp": mpp}
                     for x, y in zip(pts["x"], pts["y"])]  # fmt: skip
            images.append({"id": len(images) + 1, "file_name": name, "width": field.shape[1],
                           "height": field.shape[0], "mpp": mpp})  # fmt: skip
            # imposters: real nuclei at least 10 um from every mitosis, where a window fits
            found = nucleus_candidates(field, mpp)[:, :2]
            gap = np.hypot(*(found[:, None] - pts[["x", "y"]].to_numpy()[None]).transpose(2, 0, 1)).min(1) * mpp
            inner = (found >= 30).all(1) & (found < field.shape[0] - 30).all(1)
            chosen = [(float(x), float(y), "non-mitotic figure") for x, y in found[(gap >= 10) & inner][:2]]
            # and one 4 um from a mitosis: nearer than the matching radius, so left out
            x0, y0 = pts[["x", "y"]].iloc[0]
            chosen.append((float(x0) + 4 / mpp, float(y0), "non-mitotic figure"))
            for x, y, cat in [(x, y, "mitotic figure") for x, y in zip(pts["x"], pts["y"])] + chosen:
                annotations.append({"id": len(annotations) + 1, "image_id": images[-1]["id"],
                                    "bbox": [x - 25, y - 25, x + 25, y + 25], "category_id": 1 + (cat != "mitotic figure")})  # fmt: skip
                if cat != "mitotic figure":
                    imposters.append({"image": name, "x": x, "y": y, "far": len(imposters) % 3 != 2})
    # a real field without mitoses (colorectal stroma), listed as a row with no x, y
    stroma = read_image(next(need_data("crc").glob("STR-*.tif")))
    Image.fromarray(stroma).save(root / "fields" / "stroma.png")
    rows.append({"image": "fields/stroma.png", "slide": "stroma", "x": "", "y": "", "label": "", "mpp": 0.5})
    images.append({"id": len(images) + 1, "file_name": "fields/stroma.png", "width": stroma.shape[1],
                   "height": stroma.shape[0], "mpp": 0.5})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "points.csv", index=False)
    blob = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "non-mitotic figure"}]}  # fmt: skip
    (root / "midog.json").write_text(json.dumps(blob))
    return {"root": root, "slides": slides, "imposters": pd.DataFrame(imposters)}


def windows_cli(*args: str):
    result = runner.invoke(app, ["--quiet", "mitosis", "windows", *args])
    return result


def check_labels(out: Path) -> pd.DataFrame:
    """Every mitosis window within 3 um of a mitosis, every other window at least 7.5 um from all."""
    table = pd.read_csv(out / "windows.csv")
    points = pd.read_csv(out / "points.csv")
    crops = pd.read_csv(out / "crops.csv").set_index("image")
    for row in table.itertuples():
        mine = points.loc[points["image"] == row.image, ["x", "y"]].to_numpy()
        nearest = np.hypot(*(mine - [row.x, row.y]).T).min() * crops.loc[row.image, "mpp"] if len(mine) else np.inf
        assert nearest <= 3.0 if row.label == "mitosis" else nearest >= 7.5, row
    return table


def test_points_csv_to_a_window_dataset_split_by_slide(fields, tmp_path):
    root = fields["root"]
    result = windows_cli("--points", str(root / "points.csv"), "--out", str(tmp_path / "w"))
    assert result.exit_code == 0, result.output
    table = check_labels(tmp_path / "w")
    assert set(table["label"]) == {"mitosis", "other"} and set(table["source"]) == {"mitosis", "candidate"}
    # grouped by slide: the two fields of one slide always share a split; no slide in two splits
    split_of = table.groupby("slide")["split"].nunique()
    assert (split_of == 1).all() and set(table["split"]) == {"train", "val", "test"}
    crops = pd.read_csv(tmp_path / "w" / "crops.csv")
    assert len(crops) == 2 * 2 + (SLIDES - 2) + 1 and crops.groupby("slide")["split"].nunique().max() == 1
    # whole fields are their own valid area: the black-fill trimming of AMi-Br crops does not misfire
    assert ((crops["x0"] == 0) & (crops["y0"] == 0)).all()
    assert (crops["x1"] == [Image.open(p).size[0] for p in crops["path"]]).all()
    # the field without points is all negative, at its own mpp
    stroma = table[table["image"] == "fields/stroma.png"]
    assert len(stroma) > 10 and set(stroma["label"]) == {"other"}
    assert crops.set_index("image").loc["fields/stroma.png", "mpp"] == 0.5
    summary = json.loads((tmp_path / "w" / "windows.json").read_text())
    assert summary["mitoses_evaluated"] > 0 and summary["imposters"]["annotated"] == 0
    assert summary["mpp"]["max"] == 0.5 and "um/px" in summary["notes"][-1]  # the 0.5 um/px stroma is said


def test_midog_json_non_mitotic_figures_become_other_windows(fields, tmp_path):
    root, imposters = fields["root"], fields["imposters"]
    result = windows_cli("--points", str(root / "midog.json"), "--out", str(tmp_path / "w"))
    assert result.exit_code == 0, result.output
    table = check_labels(tmp_path / "w")
    made = table[table["source"] == "imposter"]
    assert (made["label"] == "other").all()
    far = imposters[imposters["far"]]
    assert len(made) == len(far)  # every far imposter got its window, at its place
    assert np.allclose(np.sort(made["x"].to_numpy()), np.sort(np.round(far["x"].to_numpy())), atol=1)
    summary = json.loads((tmp_path / "w" / "windows.json").read_text())
    assert summary["imposters"] == {"annotated": len(imposters), "windows": len(far),
                                    "near_mitoses": len(imposters) - len(far)}  # fmt: skip
    # imposters are not mitoses: points.csv (the evaluation's ground truth) holds only the figures
    points = pd.read_csv(tmp_path / "w" / "points.csv")
    assert set(points["label"]) == {"mitotic figure"}
    csv_points = pd.read_csv(root / "points.csv").dropna(subset=["x"])
    assert len(points) == len(csv_points)


def test_refusals_name_the_file_and_what_is_wrong(fields, tmp_path):
    root = fields["root"]
    table = pd.read_csv(root / "points.csv", dtype=str, keep_default_na=False)
    (tmp_path / "fields").symlink_to(root / "fields")
    # no mpp anywhere: refused, naming the images, unless --mpp
    table.drop(columns="mpp").to_csv(tmp_path / "no_mpp.csv", index=False)
    no_mpp = windows_cli("--points", str(tmp_path / "no_mpp.csv"), "--out", str(tmp_path / "o1"))
    assert no_mpp.exit_code == 2 and "--mpp" in no_mpp.output and "s0_f0.png" in no_mpp.output
    assert len(read_point_images(tmp_path / "no_mpp.csv", mpp=0.25).crops) == SLIDES + 3
    # a point outside its image: the CSV line is named
    bad = table.copy()
    bad.loc[3, "x"] = "9999"
    bad.to_csv(tmp_path / "outside.csv", index=False)
    with pytest.raises(DataError, match=r"outside.csv: 1 point\(s\) outside their image: CSV line 5"):
        read_point_images(tmp_path / "outside.csv")
    # a duplicate point: both lines named
    pd.concat([table, table.iloc[[0]]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match=rf"dup.csv: 1 duplicate .* CSV lines 2 and {len(table) + 2}"):
        read_point_images(tmp_path / "dup.csv")
    # a label that is neither a mitosis nor a negative is refused, not guessed
    table.assign(label=np.where(table["x"] == "", "", "maybe")).to_csv(tmp_path / "maybe.csv", index=False)
    with pytest.raises(DataError, match=r"\['maybe'\] are neither"):
        read_point_images(tmp_path / "maybe.csv")
    # an image that is not there: named, with where it was looked for
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError, match="not files.*elsewhere.*--images"):
        read_point_images(root / "points.csv", images_dir=tmp_path / "elsewhere")
    # DATA and --points together
    both = windows_cli(str(tmp_path), "--points", str(root / "points.csv"), "--out", str(tmp_path / "o2"))
    assert both.exit_code == 2 and "not both" in both.output


def test_images_folder_option_and_unlisted_fields_are_noted(fields, tmp_path):
    root = fields["root"]
    table = pd.read_csv(root / "points.csv", dtype=str, keep_default_na=False)
    table = table[table["image"] != "fields/stroma.png"]
    table.assign(image=table["image"].str.replace("fields/", "")).to_csv(tmp_path / "p.csv", index=False)
    found = read_point_images(tmp_path / "p.csv", images_dir=root / "fields")
    assert found.crops["path"].map(os.path.isfile).all()
    assert any("stroma.png" in note for note in found.notes)  # a field left out is said, not silent


def test_train_and_evaluate_on_windows_from_points(fields, tmp_path, monkeypatch):
    """The window recipe trains on the windows.csv of a points file and `mitosis evaluate` runs on it."""
    from histoflow.core.paths import recipe_dirs

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = fields["root"]
    # without the stroma field, every split holds mitoses whatever slides it draws (7 slides are few)
    blob = json.loads((root / "midog.json").read_text())
    blob["images"] = [im for im in blob["images"] if im["file_name"] != "fields/stroma.png"]
    (root / "midog_mitoses.json").write_text(json.dumps(blob))
    made = windows_cli("--points", str(root / "midog_mitoses.json"), "--out", str(tmp_path / "w"))
    assert made.exit_code == 0, made.output
    recipe = next(d / "mitosis" / "window_cnn.yaml" for d in recipe_dirs() if (d / "mitosis").is_dir())
    trained = runner.invoke(app, ["--quiet", "train", str(recipe), "--out", str(tmp_path / "run"),
                                  "--set", f"data.path={tmp_path / 'w' / 'windows.csv'}", "--set", "train.epochs=1",
                                  "--set", "train.batch_size=32", "--set", "train.accelerator=cpu"])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    evaluated = runner.invoke(app, ["--quiet", "mitosis", "evaluate", str(tmp_path / "w"), "--checkpoint", str(best),
                                    "--out", str(tmp_path / "eval")])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["methods"]["model"]["test"]["tp"] + metrics["methods"]["model"]["test"]["fn"] > 0
    assert (tmp_path / "eval" / "detector.pt").is_file()
    assert (tmp_path / "eval" / "report" / "detections_test.png").is_file()  # views of 256 px fields
