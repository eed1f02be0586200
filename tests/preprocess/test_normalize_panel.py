"""`histoflow normalize` shows what it did: a before/after picture beside the output folder (issue 20)."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from histoflow.preprocess.files import normalize_files
from tests.conftest import need_data


def test_normalize_writes_a_before_after_panel_beside_its_output(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in sorted((need_data("pcam") / "valid" / "1").glob("*.jpg"))[:9]:
        shutil.copy(f, src / f.name)
    target = sorted((need_data("pcam") / "valid" / "0").glob("*.jpg"))[0]
    summary = normalize_files([src], tmp_path / "out", target, quiet=True)
    panel = tmp_path / "out_before_after.png"
    assert summary["panel"] == str(panel) and panel.is_file()
    # the output folder holds the normalised images and the state only: nothing a reader would take for data
    assert {p.suffix for p in (tmp_path / "out").iterdir()} == {".jpg", ".json"}
    img = np.asarray(Image.open(panel).convert("RGB"))
    h, w = img.shape[:2]
    assert w > 2 * h and h >= 300  # 6 images and the target across, before above after
    # both rows hold pictures: the 'after' row is not blank
    top, bottom = img[: h // 2].astype(int), img[h // 2 :].astype(int)
    assert (top.std(axis=2) > 20).mean() > 0.2 and (bottom.std(axis=2) > 20).mean() > 0.1
