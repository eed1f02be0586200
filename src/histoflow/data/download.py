"""Fetch public datasets with checksum verification: `histoflow data download pcam`.

PCam (Veeling et al. 2018, CC0) is published on Zenodo as gzipped HDF5 files. Each file is
downloaded to `<name>.part`, decompressed to `<name>.h5.part`, checked against the MD5 of the
official release (the same digests torchvision uses), then renamed: an interrupted or corrupt
download never leaves a file that looks complete, and a finished file is not fetched again.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from histoflow.core.errors import DataError

log = logging.getLogger(__name__)

PCAM_URL = "https://zenodo.org/records/2546921/files"
# MD5 of the decompressed .h5 files of the official release.
PCAM_MD5 = {
    "camelyonpatch_level_2_split_train_x.h5": "1571f514728f59376b705fc836ff4b63",
    "camelyonpatch_level_2_split_train_y.h5": "35c2d7259d906cfc8143347bb8e05be7",
    "camelyonpatch_level_2_split_valid_x.h5": "d5b63470df7cfa627aeec8b9dc0c066e",
    "camelyonpatch_level_2_split_valid_y.h5": "2b85f58b927af9964a4c15b8f7e8f179",
    "camelyonpatch_level_2_split_test_x.h5": "d8c2d60d490dbd479f8199bdfa0cf6ec",
    "camelyonpatch_level_2_split_test_y.h5": "60a7035772fbdb7f34eb86d4420cf66a",
}
DATASETS = {"pcam": (PCAM_URL, PCAM_MD5)}


def md5sum(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected_md5: str) -> None:
    actual = md5sum(path)
    if actual != expected_md5:
        raise DataError(
            f"{path}: checksum mismatch (md5 {actual}, expected {expected_md5}); "
            f"the file is corrupt or incomplete: delete it and download again"
        )


def _fetch(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 22)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        dest.unlink(missing_ok=True)
        raise DataError(
            f"cannot download {url}: {exc}. Download it by hand (e.g. in a browser) "
            f"into {dest.parent} and run the same command again to verify it"
        ) from exc


def download(
    name: str,
    out_dir: str | Path,
    files: list[str] | None = None,
    base_url: str | None = None,
    checksums: dict[str, str] | None = None,
) -> list[Path]:
    """Download and verify dataset `name` into `out_dir`; returns the verified files.

    `files` limits which files (e.g. only the validation split); `base_url`/`checksums`
    point at a mirror.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    url, md5s = DATASETS[name]
    url, md5s = base_url or url, checksums or md5s
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = files or list(md5s)
    unknown = sorted(set(wanted) - set(md5s))
    if unknown:
        raise DataError(f"{name}: no such file(s) {unknown}; files are {sorted(md5s)}")
    done = []
    for fname in wanted:
        target = out_dir / fname
        if target.exists():
            verify_file(target, md5s[fname])
            log.info("%s: already present and verified", target)
            done.append(target)
            continue
        gz_part = out_dir / (fname + ".gz.part")
        h5_part = out_dir / (fname + ".part")
        if not gz_part.exists():
            log.info("downloading %s/%s.gz", url, fname)
            _fetch(f"{url}/{fname}.gz", gz_part)
        try:
            with gzip.open(gz_part, "rb") as src, open(h5_part, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 22)
        except (OSError, EOFError) as exc:
            gz_part.unlink(missing_ok=True)
            h5_part.unlink(missing_ok=True)
            raise DataError(f"{gz_part}: not a complete gzip file ({exc}); run the command again") from exc
        try:
            verify_file(h5_part, md5s[fname])
        except DataError:
            gz_part.unlink(missing_ok=True)
            h5_part.unlink(missing_ok=True)
            raise
        h5_part.replace(target)
        gz_part.unlink(missing_ok=True)
        done.append(target)
    return done
