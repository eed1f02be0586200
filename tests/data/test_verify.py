"""Bad input gives a DataError naming the file, or with on_error=skip is dropped and counted."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histoflow.core.errors import DataError
from histoflow.core.images import read_image
from histoflow.data.manifest import read_manifest
from histoflow.data.verify import verify_manifest
from tests.conftest import need_data
from tests.helpers import class_folder_dataset, write_png


@pytest.fixture
def real_jpeg_bytes():
    path = sorted(need_data("pcam", "valid", "1").glob("*.jpg"))[0]
    return path.read_bytes()


def test_truncated_jpeg_named(tmp_path, real_jpeg_bytes):
    root = class_folder_dataset(tmp_path / "ds")
    bad = root / "1" / "truncated.jpg"
    bad.write_bytes(real_jpeg_bytes[: len(real_jpeg_bytes) // 2])
    m = read_manifest(root)
    with pytest.raises(DataError, match=r"1 bad image\(s\)[\s\S]*truncated\.jpg: cannot decode image"):
        verify_manifest(m)
    kept = verify_manifest(m, on_error="skip")
    assert len(kept) == len(m) - 1
    assert kept.skipped[0][0].endswith("truncated.jpg")


def test_garbage_and_empty_files(tmp_path):
    root = class_folder_dataset(tmp_path / "ds")
    (root / "0" / "garbage.png").write_bytes(b"this is not an image")
    (root / "0" / "empty.png").write_bytes(b"")
    m = verify_manifest(read_manifest(root), on_error="skip")
    reasons = dict(m.skipped)
    assert any("garbage.png: cannot decode image" in r for r in reasons.values())
    assert any("empty.png: file is empty" in r for r in reasons.values())


def test_csv_naming_missing_files(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png", seed=1)
    (tmp_path / "m.csv").write_text("path,label\na.png,0\nb.png,1\nmissing1.png,0\nmissing2.png,1\n")
    m = read_manifest(tmp_path / "m.csv")
    with pytest.raises(DataError, match=r"2 bad image\(s\)[\s\S]*missing1\.png: file not found[\s\S]*missing2\.png"):
        verify_manifest(m)
    assert len(verify_manifest(m, on_error="skip").skipped) == 2


def test_one_class_label_column(tmp_path):
    for i in range(3):
        write_png(tmp_path / "img" / f"{i}.png", seed=i)
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"img/{i}.png,tumour\n" for i in range(3)))
    m = read_manifest(tmp_path / "m.csv")
    with pytest.raises(
        DataError, match=r"m\.csv: label column has 1 class\(es\) \['tumour'\]; a classifier needs at least 2"
    ):
        m.require_classes(2)


def test_non_rgb_images_converted_or_refused(tmp_path):
    rgba = write_png(tmp_path / "rgba.png", mode="RGBA", value=0)  # fully transparent
    gray = write_png(tmp_path / "gray.png", mode="L", value=77)
    sixteen = tmp_path / "sixteen.png"
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(sixteen)
    assert read_image(rgba).shape == (32, 32, 3)
    assert (read_image(rgba) == 255).all()  # transparent = glass = white, not black tissue
    assert (read_image(gray) == 77).all()
    px = read_image(sixteen)
    assert px.dtype == np.uint8 and px.shape == (8, 8, 3) and px[0, 0, 0] == 40000 >> 8
    for path in (rgba, gray, sixteen):
        with pytest.raises(DataError, match=f"{path.name}: image mode .* is not 8-bit RGB"):
            read_image(path, non_rgb="raise")


def test_real_rgba_still_is_converted():
    img = read_image(need_data("stills", "torchstain_source.png"))
    assert img.ndim == 3 and img.shape[2] == 3


def test_mixed_sizes_reported_or_refused():
    idc = read_manifest(need_data("idc", "8975"))
    m = verify_manifest(idc)
    sizes = set(zip(m.frame["width"], m.frame["height"]))
    assert (50, 50) in sizes and len(sizes) == 2  # one real 32x50 edge patch
    with pytest.raises(DataError, match=r"size 32x50 differs from the common 50x50|size 50x32 differs"):
        verify_manifest(idc, size_policy="raise")
    skipped = verify_manifest(idc, size_policy="raise", on_error="skip")
    assert len(skipped) == 102 and len(skipped.skipped) == 1


def test_everything_bad_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="every image was bad"):
        verify_manifest(read_manifest(tmp_path), on_error="skip")
