"""Odd label tables and folders: a CSV with some labels missing, a class folder left empty."""

from __future__ import annotations

import logging

import pytest

from histoflow.core.errors import DataError
from histoflow.data.manifest import read_manifest
from tests.helpers import write_png


def test_csv_with_some_empty_labels_names_the_lines(tmp_path):
    for i in range(4):
        write_png(tmp_path / f"{i}.png", seed=i)
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\n0.png,tumour\n1.png,\n2.png,normal\n3.png,\n")
    with pytest.raises(DataError, match=r"m\.csv: 2 of 4 rows have an empty 'label' \(CSV lines 3, 5\)"):
        read_manifest(csv)


def test_csv_with_no_labels_at_all_is_unlabelled(tmp_path):
    for i in range(2):
        write_png(tmp_path / f"{i}.png", seed=i)
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\n0.png,\n1.png,\n")
    assert not read_manifest(csv).labelled


def test_empty_class_folder_is_reported(tmp_path, caplog):
    write_png(tmp_path / "tumour" / "a.png")
    write_png(tmp_path / "normal" / "b.png", seed=1)
    (tmp_path / "stroma").mkdir()
    with caplog.at_level(logging.WARNING, logger="histoflow"):
        manifest = read_manifest(tmp_path)
    assert manifest.class_names == ["normal", "tumour"]
    assert any("stroma" in r.getMessage() and "no images" in r.getMessage() for r in caplog.records)
