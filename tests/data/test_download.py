"""Dataset download: the failure path and checksum verification, on local files (no internet)."""

from __future__ import annotations

import gzip

import pytest

from histoflow.core.errors import DataError
from histoflow.data.download import PCAM_MD5, download, md5sum

NAME = "camelyonpatch_level_2_split_valid_y.h5"


def make_mirror(tmp_path, payload: bytes):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with gzip.open(mirror / f"{NAME}.gz", "wb") as f:
        f.write(payload)
    return mirror


def test_download_verifies_and_is_idempotent(tmp_path):
    payload = b"pretend hdf5 bytes" * 100
    mirror = make_mirror(tmp_path, payload)
    (tmp_path / "ref").write_bytes(payload)
    sums = {NAME: md5sum(tmp_path / "ref")}
    out = tmp_path / "out"
    got = download("pcam", out, files=[NAME], base_url=mirror.as_uri(), checksums=sums)
    assert got == [out / NAME] and (out / NAME).read_bytes() == payload
    assert not list(out.glob("*.part"))
    (mirror / f"{NAME}.gz").unlink()  # second run: nothing fetched, file re-verified
    assert download("pcam", out, files=[NAME], base_url=mirror.as_uri(), checksums=sums) == [out / NAME]


def test_checksum_mismatch_leaves_nothing_that_looks_complete(tmp_path):
    mirror = make_mirror(tmp_path, b"corrupted")
    out = tmp_path / "out"
    with pytest.raises(
        DataError, match=r"checksum mismatch \(md5 [0-9a-f]{32}, expected 2b85f58b927af9964a4c15b8f7e8f179\)"
    ):
        download("pcam", out, files=[NAME], base_url=mirror.as_uri())
    assert not (out / NAME).exists() and not list(out.iterdir())


def test_unreachable_source_is_a_clear_error(tmp_path):
    with pytest.raises(
        DataError, match=r"cannot download .*camelyonpatch_level_2_split_valid_y\.h5\.gz.*Download it by hand"
    ):
        download("pcam", tmp_path, files=[NAME], base_url="http://127.0.0.1:9/nothing")
    assert not list(tmp_path.iterdir())


def test_official_table_and_unknowns(tmp_path):
    assert len(PCAM_MD5) == 6
    with pytest.raises(DataError, match="unknown dataset 'camelyon'"):
        download("camelyon", tmp_path)
    with pytest.raises(DataError, match="no such file"):
        download("pcam", tmp_path, files=["x.h5"])
