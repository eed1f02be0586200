"""Candidate nuclei and window cutting: positions, the border policies, black slide-edge fill."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histoflow.config.mitosis import CandidateConfig
from histoflow.core.errors import ConfigError, DataError
from histoflow.data.windows import cut_windows, fits, valid_box, window_region
from histoflow.preprocess.nuclei import nucleus_candidates
from tests.mitosis.synthetic import disks


def test_candidates_sit_on_dark_disks_and_respect_the_mask():
    img = disks()
    found = nucleus_candidates(img, mpp=0.25)
    assert sorted(map(tuple, found[:, :2].astype(int).tolist())) == [(40, 40), (60, 100), (90, 70)]
    assert (found[:, 2] > 0.1).all()
    mask = np.zeros(img.shape[:2], bool)
    mask[:, :64] = True
    assert sorted(map(tuple, nucleus_candidates(img, 0.25, mask=mask)[:, :2].astype(int).tolist())) == [
        (40, 40),
        (60, 100),
    ]
    # a threshold above the disks' darkness finds nothing; a blank image finds nothing
    assert len(nucleus_candidates(img, 0.25, CandidateConfig(threshold=0.5))) == 0
    assert len(nucleus_candidates(disks(centres=()), 0.25)) == 0
    with pytest.raises(DataError, match="microns per pixel"):
        nucleus_candidates(img, 0)


def test_candidate_distances_are_in_microns():
    two = disks(centres=((50, 64), (62, 64)), radius=4)  # 12 px apart
    near = nucleus_candidates(two, 0.25, CandidateConfig(min_distance_um=1.0, sigma_um=0.25))  # 4 px
    far = nucleus_candidates(two, 0.25, CandidateConfig(min_distance_um=4.0, sigma_um=0.25))  # 16 px
    assert len(near) == 2 and len(far) == 1


def test_windows_inside_skip_the_border_and_reflect_keeps_every_point():
    img = np.arange(20 * 20 * 3, dtype=np.uint8).reshape(20, 20, 3)
    points = np.array([[10, 10], [3, 10], [16, 16]])
    windows, kept = cut_windows(img, points, 8, "inside")
    assert kept.tolist() == [0, 2] and windows.shape == (2, 3, 8, 8)
    # window of (10, 10) covers rows/cols 6..13
    assert (windows[0] == img[6:14, 6:14].transpose(2, 0, 1)).all()
    assert fits(points, (0, 0, 20, 20), 8).tolist() == [True, False, True]
    assert window_region((0, 0, 20, 20), 8) == (4, 4, 17, 17)  # x=16 fits (12..19), x=17 does not
    mirrored, kept = cut_windows(img, points, 8, "reflect")
    assert kept.tolist() == [0, 1, 2] and (mirrored[0] == windows[0]).all()
    # (3, 10): columns -1..6; column -1 mirrors column 1 (reflect-101)
    assert (mirrored[1][:, :, 0] == img[6:14, 1].T).all() and (mirrored[1][:, :, 1] == img[6:14, 0].T).all()
    with pytest.raises(ConfigError, match="border"):
        cut_windows(img, points, 8, "wrap")  # type: ignore[arg-type]


def test_black_slide_edge_fill_is_outside_the_valid_area():
    img = disks()
    img[:, :30] = 0  # a crop that passed the slide's left edge
    assert valid_box(img) == (30, 0, 128, 128)
    windows, kept = cut_windows(img, [[40, 40], [70, 70]], 24, "inside", valid_box(img))
    assert kept.tolist() == [1]  # the window at x=40 would reach into the black fill
    with pytest.raises(DataError, match="entirely black"):
        valid_box(np.zeros((8, 8, 3), np.uint8))


def test_window_dataset_from_amibr_crops_is_split_by_slide_and_resumable(tmp_path):
    import pandas as pd

    from histoflow.config.mitosis import MitosisWindowsConfig
    from histoflow.data.amibr import read_amibr
    from histoflow.data.mitosis_windows import build_windows
    from tests.conftest import need_data

    ami = read_amibr(need_data("ami_br"))
    keep = ami.crops["slide"].isin(sorted(ami.crops["slide"].unique())[:24])  # 24 slides: a few seconds
    ami.crops = ami.crops[keep].reset_index(drop=True)
    cfg = MitosisWindowsConfig(split={"val_fraction": 0.25, "test_fraction": 0.25})
    (tmp_path / "w" / ".windows.partial").mkdir(parents=True)  # what a killed run leaves behind
    summary = build_windows(ami, cfg, tmp_path / "w", quiet=True)
    table = pd.read_csv(tmp_path / "w" / "windows.csv")
    slides = table.groupby("split")["slide"].apply(set)
    assert not (slides["train"] & slides["val"]) and not (slides["train"] & slides["test"])
    assert (
        set(table["label"]) == {"mitosis", "other"}
        and table["path"].map(lambda p: (tmp_path / "w" / p).is_file()).all()
    )
    # the paths are relative to windows.csv, as a CSV manifest reads them, from any working folder
    from histoflow.data.manifest import read_manifest

    assert read_manifest(tmp_path / "w" / "windows.csv").frame["path"].map(lambda p: Path(p).is_file()).all()
    # every window of a mitosis is within 3 um of one; every other window at least 7.5 um from all
    points = pd.read_csv(tmp_path / "w" / "points.csv")
    crops = pd.read_csv(tmp_path / "w" / "crops.csv").set_index("image")
    for row in table.sample(200, random_state=0).itertuples():
        mine = points[points["image"] == row.image][["x", "y"]].to_numpy()
        nearest_um = np.hypot(*(mine - [row.x, row.y]).T).min() * crops.loc[row.image, "mpp"]
        assert nearest_um <= 3.0 if row.label == "mitosis" else nearest_um >= 7.5
    assert build_windows(ami, cfg, tmp_path / "w", quiet=True) == summary  # finished: reused


def test_haematoxylin_in_bands_of_rows_equals_one_call(monkeypatch):
    """Large fields go through rgb2hed a band at a time (bounded memory); the result must not change."""
    from skimage.color import rgb2hed

    from histoflow.preprocess import nuclei

    img = np.random.default_rng(0).integers(0, 256, (70, 50, 3), dtype=np.uint8)
    monkeypatch.setattr(nuclei, "BLOCK_PIXELS", 50 * 16)  # 16-row bands, the last one short
    assert np.array_equal(nuclei.haematoxylin(img), rgb2hed(img)[..., 0].astype(np.float32))


def test_dark_regions_of_a_large_field_are_not_black_fill():
    """valid_box trims only whole black rows/columns at the border (slide-edge fill), never a dark
    region inside a field, however large or dark."""
    field = np.full((400, 600, 3), 220, np.uint8)
    field[50:350, 0:200] = 5  # a near-black blob touching the left edge but not filling whole columns
    field[0:60, 300:400] = 0
    assert valid_box(field) == (0, 0, 600, 400)
    field[:, 580:] = 0  # real fill past a slide's edge
    assert valid_box(field) == (0, 0, 580, 400)


def test_reflect_windows_leave_out_a_mitosis_lying_in_black_slide_edge_fill():
    """With border: reflect, a figure in the black fill of a crop at a slide's edge is not
    evaluated and gets no window (mirroring needs a point inside the valid area); the others do."""
    from histoflow.config.mitosis import MitosisWindowsConfig
    from histoflow.data.mitosis_windows import crop_windows

    rgb = disks(size=(128, 128), centres=[(60, 60), (100, 90)], radius=6)
    rgb[:, :30] = 0  # slide-edge fill: valid area starts at x = 30
    mitoses = np.array([[60.0, 60.0], [10.0, 64.0]])  # the second lies in the fill
    cut = crop_windows(rgb, mitoses, 0.25, MitosisWindowsConfig(border="reflect"))
    assert cut["box"][0] == 30 and cut["evaluated"].tolist() == [True, False]
    assert [tuple(c) for c, s in zip(cut["centres"], cut["source"]) if s == "mitosis"] == [(60.0, 60.0)]


def test_the_detection_montage_draws_fields_that_are_not_square(tmp_path):
    """A wide field beside a square crop: each padded to the largest height and width."""
    from PIL import Image

    from histoflow.evaluate.detection import ImageDetections
    from histoflow.evaluate.mitosis_pictures import detection_montage

    wide, square = tmp_path / "wide.png", tmp_path / "square.png"
    Image.fromarray(disks(size=(150, 100), centres=[(40, 50)])).save(wide)
    Image.fromarray(disks(size=(128, 128))).save(square)
    crops = [
        (str(p), ImageDetections(p.name, [[40.0, 50.0]], [[41.0, 50.0], [100.0, 20.0]], [0.9, 0.8], 8.0))
        for p in (wide, square)
    ]
    out = detection_montage(crops, 0.5, tmp_path / "m.png", window_px=24, columns=2)
    picture = np.asarray(Image.open(out))
    assert picture.shape[1] == 2 * (150 * 3 + 4) and picture.shape[0] > 128 * 3
