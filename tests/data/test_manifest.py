"""Every patch layout users bring becomes one Manifest; read from real files in ../shared/data."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from histoflow.core.errors import DataError
from histoflow.data.manifest import class_order, detect_format, read_manifest
from tests.conftest import need_data
from tests.helpers import pcam_h5_from_jpegs, write_png


def test_pcam_class_folders_with_split_dirs():
    m = read_manifest(need_data("pcam"))
    assert m.format == "class_folders"
    assert m.class_names == ["0", "1"]
    assert m.splits == ["train", "val"]  # "valid" folder is normalised to "val"
    counts = m.frame.groupby(["split", "label"]).size().to_dict()
    assert counts == {("train", "0"): 10000, ("train", "1"): 10000, ("val", "0"): 1500, ("val", "1"): 1500}
    assert m.frame["path"].str.endswith(".jpg").all()


def test_breakhis_parses_slide_as_patient():
    m = read_manifest(need_data("breakhis"))
    assert m.class_names == ["benign", "malignant"]
    assert len(m) == 78
    assert (m.frame["patient"] != "").all()
    assert m.frame["patient"].nunique() == 13  # the README: 13 slides
    assert set(m.frame["subtype"]) <= {"A", "F", "TA", "PT", "DC", "MC", "LC", "PC"}
    assert m.group_column() == "patient"


def test_idc_patient_folder_and_nested_root(tmp_path):
    single = read_manifest(need_data("idc", "8975"))
    assert single.format == "idc"
    assert len(single) == 103
    assert (single.frame["patient"] == "8975").all()
    assert single.frame.groupby("label").size().to_dict() == {"0": 52, "1": 51}
    assert {"x", "y"} <= set(single.frame.columns) and single.frame["x"].dtype.kind == "i"
    # the full IDC release nests patients under one root
    root = tmp_path / "idc"
    shutil.copytree(need_data("idc", "8975"), root / "8975")
    nested = read_manifest(root)
    assert nested.format == "idc" and len(nested) == 103


def test_crc_as_class_folders_and_by_file_name(tmp_path):
    crc = need_data("crc")
    flat = read_manifest(crc, format="images", label_pattern=r"^([A-Z]+)-")
    assert flat.class_names == ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
    for path in crc.glob("*.tif"):  # NCT-CRC-HE-100K's own layout: one folder per class
        (tmp_path / path.name.split("-")[0]).mkdir()
        (tmp_path / path.name.split("-")[0] / path.name).symlink_to(path)
    folders = read_manifest(tmp_path)
    assert folders.format == "class_folders" and folders.class_names == flat.class_names


def test_kaggle_layout(tmp_path):
    tifs = sorted(need_data("kaggle_hcd").glob("*.tif"))
    (tmp_path / "train").mkdir()
    lines = ["id,label"]
    for i, tif in enumerate(tifs):
        (tmp_path / "train" / tif.name).symlink_to(tif)
        lines.append(f"{tif.stem},{i % 2}")
    (tmp_path / "train_labels.csv").write_text("\n".join(lines) + "\n")
    m = read_manifest(tmp_path)
    assert m.format == "kaggle" and len(m) == len(tifs)
    assert m.class_names == ["0", "1"]
    from histoflow.core.images import read_image

    assert read_image(m.frame["path"][0]).shape == (96, 96, 3)


def test_kaggle_test_folder_is_unlabelled_images():
    m = read_manifest(need_data("kaggle_hcd"))
    assert m.format == "images" and not m.labelled and len(m) == 18


def test_pcam_hdf5_lazy(tmp_path):
    pcam_h5_from_jpegs(need_data("pcam", "valid"), tmp_path, n_per_class=5)
    m = read_manifest(tmp_path)
    assert m.format == "pcam_h5"
    assert len(m) == 10 and m.splits == ["val"]
    assert m.frame["item"].tolist() == list(range(10))
    assert m.frame.groupby("label").size().to_dict() == {"0": 5, "1": 5}


def test_csv_manifest_relative_paths_and_label_column(tmp_path):
    for i in range(4):
        write_png(tmp_path / "img" / f"{i}.png", seed=i)
    (tmp_path / "m.csv").write_text(
        "file,diagnosis,patient\n" + "".join(f"img/{i}.png,{'ab'[i % 2]},p{i // 2}\n" for i in range(4))
    )
    with pytest.raises(
        DataError, match=r"missing column\(s\) \['path', 'label'\].*found \['file', 'diagnosis', 'patient'\]"
    ):
        read_manifest(tmp_path / "m.csv")
    m = read_manifest(tmp_path / "m.csv", path_column="file", label_column="diagnosis")
    assert m.class_names == ["a", "b"]
    assert m.frame["path"][0] == str(tmp_path / "img" / "0.png")
    assert m.frame["patient"].tolist() == ["p0", "p0", "p1", "p1"]


def test_empty_and_ambiguous_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        read_manifest(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    write_png(mixed / "loose.png")
    write_png(mixed / "tumour" / "a.png")
    with pytest.raises(DataError, match=r"ambiguous layout: 1 images at the top level and 1 sub-folders \(tumour\)"):
        read_manifest(mixed)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell the dataset layout; saw: notes.txt"):
        read_manifest(tmp_path / "odd")
    with pytest.raises(DataError, match="no such file"):
        read_manifest(tmp_path / "missing")


def test_unknown_format_suggests(tmp_path):
    with pytest.raises(DataError, match=r"did you mean \['class_folders'\]"):
        read_manifest(tmp_path, format="class_folder")


def test_class_order_numeric_and_text():
    assert class_order(["10", "2", "1"]) == ["1", "2", "10"]
    assert class_order(["tumor", "normal"]) == ["normal", "tumor"]


def test_targets_and_csv_round_trip(tmp_path):
    m = read_manifest(need_data("breakhis"))
    path = m.to_csv(tmp_path / "out" / "manifest.csv")
    again = read_manifest(path)
    assert again.frame["path"].tolist() == m.frame["path"].tolist()
    np.testing.assert_array_equal(again.targets, m.targets)
    assert detect_format(path) == "csv"


def test_a_runs_splits_csv_reads_back_as_a_manifest_with_numeric_sizes(tmp_path):
    """`evaluate RUN/splits.csv --split test` reads the CSV a run wrote: its height/width columns
    come back as numbers (they once came back as text and image_sizes failed comparing them)."""
    from histoflow.data.sizes import image_sizes

    root = tmp_path / "patches"
    paths = [write_png(root / "0" / f"a{i}.png", size=(40, 30), seed=i) for i in range(3)]
    paths += [write_png(root / "1" / f"b{i}.png", size=(40, 30), seed=9 + i) for i in range(3)]
    manifest = read_manifest(root)
    frame = manifest.frame.assign(split=["train", "test", "val"] * 2, height=30, width=40)
    frame.to_csv(tmp_path / "splits.csv", index=False)
    back = read_manifest(tmp_path / "splits.csv")
    assert back.frame["height"].dtype.kind == "i" and back.frame["width"].dtype.kind == "i"
    assert image_sizes(back.split("test")) == {(40, 30): 2}
