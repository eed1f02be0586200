"""Point annotations: CSV and COCO readers, points outside images, duplicates, images without points,
and AMi-Br's crop map (every mitosis inside each crop) on the real data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from histoflow.core.errors import DataError
from histoflow.data.points import read_points_coco, read_points_csv
from tests.conftest import need_data


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_slide_column_labels_and_mpp(tmp_path):
    csv = write(tmp_path / "p.csv", "slide,x,y,label\na.tif,10,20,mitosis\na.tif,30.5,40,mitosis\nb.tif,1,2,\n")
    points = read_points_csv(csv, mpp=0.25, images=["c.tif"])
    assert len(points) == 3
    assert points.image_names == ["c.tif", "a.tif", "b.tif"]  # c.tif: listed, no points, all negative
    assert points.xy("a.tif").tolist() == [[10.0, 20.0], [30.5, 40.0]]
    assert points.xy("c.tif").shape == (0, 2)
    assert points.labels("b.tif") == [""]
    assert points.mpp("a.tif") == 0.25


def test_amibr_majority_column_becomes_atypical_or_normal(tmp_path):
    csv = write(tmp_path / "p.csv", ",slide,x,y,majority_atypical\n0,s1,1,2,True\n1,s1,5,6,False\n")
    points = read_points_csv(csv)
    assert points.labels("s1") == ["atypical", "normal"]
    assert "Unnamed: 0" not in points.points.columns


def test_csv_per_image_mpp_column_and_conflicts(tmp_path):
    ok = read_points_csv(write(tmp_path / "a.csv", "image,x,y,mpp\na,1,1,0.23\nb,1,1,0.25\n"))
    assert ok.mpp("a") == 0.23 and ok.mpp("b") == 0.25
    with pytest.raises(DataError, match="two mpp values"):
        read_points_csv(write(tmp_path / "b.csv", "image,x,y,mpp\na,1,1,0.23\na,5,5,0.25\n"))


def test_csv_errors_name_lines_and_columns(tmp_path):
    with pytest.raises(DataError, match="no image column"):
        read_points_csv(write(tmp_path / "a.csv", "name,x,y\na,1,1\n"))
    with pytest.raises(DataError, match="not a number on CSV line\\(s\\) 3"):
        read_points_csv(write(tmp_path / "b.csv", "image,x,y\na,1,1\na,two,1\n"))
    with pytest.raises(DataError, match="empty 'image' on CSV line"):
        read_points_csv(write(tmp_path / "c.csv", "image,x,y\n,1,1\n"))
    with pytest.raises(DataError, match="file not found"):
        read_points_csv(tmp_path / "missing.csv")


def test_points_outside_their_image_are_refused_with_the_line(tmp_path):
    csv = write(tmp_path / "p.csv", "image,x,y\na,10,10\na,100,10\nb,-1,3\n")
    with pytest.raises(DataError, match=r"2 point\(s\) outside.*line 3: a \(100, 10\) outside 100x50.*line 4"):
        read_points_csv(csv, sizes={"a": (100, 50)})
    # x == width - 1 is the last pixel: inside
    assert len(read_points_csv(write(tmp_path / "q.csv", "image,x,y\na,99,49\n"), sizes={"a": (100, 50)})) == 1


def test_duplicates_raise_or_drop_and_refuse_conflicting_labels(tmp_path):
    csv = write(tmp_path / "p.csv", "image,x,y,label\na,10,10,m\na,10,10,m\na,11,10,m\nb,10,10,m\n")
    with pytest.raises(DataError, match="1 duplicate point pair.*lines 2 and 3"):
        read_points_csv(csv)
    dropped = read_points_csv(csv, on_duplicate="drop")
    assert len(dropped) == 3 and dropped.dropped == 1 and dropped.notes
    near = read_points_csv(csv, on_duplicate="drop", duplicate_px=1.5)  # (11, 10) is within 1.5 px too
    assert len(near) == 2 and near.xy("a").tolist() == [[10.0, 10.0]]
    clash = write(tmp_path / "q.csv", "image,x,y,label\na,10,10,m\na,10,10,other\n")
    with pytest.raises(DataError, match="different labels"):
        read_points_csv(clash, on_duplicate="drop")


def coco(tmp_path, annotations, images=None, name="d.json"):
    blob = {
        "images": images
        or [
            {"id": 1, "file_name": "001.tiff", "width": 200, "height": 100},
            {"id": 2, "file_name": "002.tiff", "width": 200, "height": 100},
        ],
        "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
        "annotations": annotations,
    }
    return write(tmp_path / name, json.dumps(blob))


def test_coco_box_centres_categories_and_images_without_points(tmp_path):
    path = coco(
        tmp_path,
        [
            {"id": 1, "image_id": 1, "bbox": [10, 20, 60, 70], "category_id": 1},
            {"id": 2, "image_id": 1, "bbox": [100, 20, 150, 70], "category_id": 2},
        ],
    )
    points = read_points_coco(path, mpp=0.23)
    assert points.xy("001.tiff").tolist() == [[35.0, 45.0], [125.0, 45.0]]
    assert points.labels("001.tiff") == ["mitotic figure", "not mitotic figure"]
    assert points.image_names == ["001.tiff", "002.tiff"] and points.xy("002.tiff").shape == (0, 2)
    mitoses = read_points_coco(path, categories=["mitotic figure"])
    assert len(mitoses) == 1
    xywh = read_points_coco(path, bbox_format="xywh")
    assert xywh.xy("001.tiff")[0].tolist() == [40.0, 55.0]
    with pytest.raises(DataError, match="categories \\['mitosis'\\] not in the file"):
        read_points_coco(path, categories=["mitosis"])


def test_coco_bad_input(tmp_path):
    outside = coco(tmp_path, [{"id": 1, "image_id": 1, "bbox": [180, 20, 230, 70], "category_id": 1}], name="o.json")
    with pytest.raises(DataError, match="outside their image.*annotation 0: 001.tiff \\(205, 45\\) outside 200x100"):
        read_points_coco(outside)
    unknown = coco(tmp_path, [{"id": 1, "image_id": 9, "bbox": [1, 2, 3, 4], "category_id": 1}], name="u.json")
    with pytest.raises(DataError, match="known image_id"):
        read_points_coco(unknown)
    twice = coco(
        tmp_path,
        [{"id": i, "image_id": 1, "bbox": [10, 20, 60, 70], "category_id": 1} for i in (1, 2)],
        name="t.json",
    )
    with pytest.raises(DataError, match="duplicate point pair.*annotations 0 and 1"):
        read_points_coco(twice)
    assert len(read_points_coco(twice, on_duplicate="drop")) == 1
    with pytest.raises(DataError, match="not valid JSON"):
        read_points_coco(write(tmp_path / "bad.json", "{"))


def test_amibr_crops_know_every_mitosis_inside_them():
    from histoflow.data.amibr import read_amibr

    root = need_data("ami_br")
    ami = read_amibr(root)
    crops, points = ami.crops, ami.points.points
    assert len(crops) == 2032 and crops["slide"].nunique() == 185
    assert crops["label"].value_counts().to_dict() == {"normal": 1200, "atypical": 832}
    centre = points[points["centre"]]
    assert len(centre) == 2032 and (centre[["x", "y"]].to_numpy() == 64).all()
    others = points[~points["centre"]]
    assert len(others) > 0 and others[["x", "y"]].to_numpy().min() >= 0 and others[["x", "y"]].to_numpy().max() < 128
    # one crop checked by hand against the slide coordinates: MIDOG21 uid 7 at (1867, 1583) on 002.tiff
    row = crops[crops["image"] == "MIDOG21_7.png"].iloc[0]
    assert (row["slide"], row["x"], row["y"], row["label"], row["mpp"]) == (
        "MIDOG21/002.tiff",
        1867,
        1583,
        "atypical",
        0.23,
    )
    # every other mitosis lies where the slide coordinates say: (64 + dx, 64 + dy)
    import pandas as pd

    table = pd.read_csv(root / "AMI-BR-all.csv")
    pick = others.iloc[0]
    crop = crops[crops["image"] == pick["image"]].iloc[0]
    slide = crop["slide"].split("/", 1)[1]
    mine = table[(table["slide"] == slide) & (table["uid"] == pick["uid"])].iloc[0]
    assert (pick["x"], pick["y"]) == (64 + mine["x"] - crop["x"], 64 + mine["y"] - crop["y"])
    manifest = ami.atypia_manifest()
    assert manifest.class_names == ["normal", "atypical"] and manifest.group_column() == "slide"
    assert np.isin(manifest.frame["label"], ["normal", "atypical"]).all()


def test_a_slide_column_beside_a_file_name_column_is_not_taken_for_the_image(tmp_path):
    from histoflow.data.points import read_points_csv

    (tmp_path / "p.csv").write_text("file_name,slide,x,y\na.png,S1,5,6\nb.png,S1,7,8\n")
    points = read_points_csv(tmp_path / "p.csv")
    assert sorted(points.points["image"].unique()) == ["a.png", "b.png"]


def test_amibr_votes_read_the_same_in_the_folder_reader_and_point_csvs(tmp_path):
    """1/0 and True/False mean the same in AMI-BR.csv (read_amibr) as in a point CSV: the folder
    reader used to call a "1" normal. An unknown vote is an error naming the file."""
    import pandas as pd

    from histoflow.data.amibr import crop_points, read_amibr
    from histoflow.data.points import atypia_labels

    votes = pd.Series(["True", "1", "false", "0", " TRUE "])
    assert atypia_labels(votes, "t.csv").tolist() == ["atypical", "atypical", "normal", "normal", "atypical"]
    crops = pd.DataFrame(
        {"slide": ["d/s"], "dataset": ["d"], "uid": [1], "x": [100], "y": [100], "image": ["d_1.png"], "mpp": [0.25]}
    )
    everything = pd.DataFrame(
        {"slide": ["d/s", "d/s"], "dataset": ["d", "d"], "uid": [1, 2], "x": [100, 110], "y": [100, 90]}
    )
    points = crop_points(crops, everything.assign(majority_atypical=["1", "0"])).points
    assert sorted(points["label"]) == ["atypical", "normal"]
    with pytest.raises(DataError, match="AMI-BR-all.csv.*maybe"):
        crop_points(crops, everything.assign(majority_atypical=["1", "maybe"]))
    root = tmp_path / "ami"
    (root / "atypical").mkdir(parents=True)
    (root / "normal").mkdir()
    table = ",slide,dataset,uid,x,y,majority_atypical\n0,002.tiff,MIDOG21,1,100,100,1\n1,002.tiff,MIDOG21,2,400,400,0\n"
    for name in ("AMI-BR.csv", "AMI-BR-all.csv"):
        (root / name).write_text(table)
    (root / "atypical" / "MIDOG21_1.png").write_bytes(b"")
    (root / "normal" / "MIDOG21_2.png").write_bytes(b"")
    assert read_amibr(root).crops["label"].tolist() == ["atypical", "normal"]
