"""Check every image of a manifest once, before a long job depends on it.

Each image is decoded in full (a truncated JPEG often has a valid header), so a bad file is
found in seconds rather than an hour into training. With `on_error="raise"` the first problems
are listed in one DataError; with `on_error="skip"` bad rows are dropped, counted and kept in
`manifest.skipped` for the summary.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from histoflow.core.errors import DataError
from histoflow.core.images import read_image
from histoflow.data.manifest import Manifest

ON_ERROR = ("raise", "skip")


def _probe(args: tuple[str, int, str]) -> tuple[int, int, str, str]:
    """(height, width, original mode or '', error or '') for one image."""
    path, item, non_rgb = args
    if item >= 0:  # container (HDF5) rows are checked in bulk by _probe_h5
        return -1, -1, "", ""
    try:
        arr = read_image(path, non_rgb)  # first: it words missing/empty/corrupt files best
        from PIL import Image

        with Image.open(path) as img:
            mode = img.mode
        return arr.shape[0], arr.shape[1], mode, ""
    except DataError as exc:
        return -1, -1, "", str(exc)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem of this file
        return -1, -1, "", f"{path}: cannot decode image ({exc})"


def _probe_h5(manifest: Manifest) -> dict[int, str]:
    import h5py

    errors: dict[int, str] = {}
    frame = manifest.frame
    for path, rows in frame[frame["item"] >= 0].groupby("path").groups.items():
        try:
            with h5py.File(path, "r") as f:
                n, h, w = f["x"].shape[:3]
        except (OSError, KeyError) as exc:
            for r in rows:
                errors[r] = f"{path}: cannot read PCam HDF5 ({exc})"
            continue
        items = frame.loc[rows, "item"]
        for r, item in items.items():
            if item >= n:
                errors[r] = f"{path}: item {item} out of range ({n} images)"
        frame.loc[rows, "height"] = h
        frame.loc[rows, "width"] = w
    return errors


def verify_manifest(
    manifest: Manifest,
    on_error: str = "raise",
    non_rgb: str = "convert",
    size_policy: str = "resize",
    workers: int | None = None,
) -> Manifest:
    """Decode every image once; add `height`, `width`, `mode` columns; raise or skip bad rows."""
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    frame = manifest.frame.copy()
    manifest = Manifest(frame, manifest.class_names, manifest.format, manifest.source, list(manifest.skipped))
    jobs = [(p, int(i), non_rgb) for p, i in zip(frame["path"], frame["item"])]
    workers = workers or min(os.cpu_count() or 1, 4)
    if len(jobs) > 2000 and workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_probe, jobs, chunksize=256))
    else:
        results = [_probe(j) for j in jobs]
    frame["height"] = [r[0] for r in results]
    frame["width"] = [r[1] for r in results]
    frame["mode"] = [r[2] for r in results]
    errors = {i: r[3] for i, r in enumerate(results) if r[3]}
    errors.update(_probe_h5(manifest))

    if size_policy == "raise":
        sizes = frame.loc[frame["height"] > 0, ["height", "width"]].astype(int).apply(tuple, axis=1)
        if sizes.nunique() > 1:
            common = sizes.mode().iloc[0]
            for i in sizes.index[sizes != common]:
                errors.setdefault(
                    i,
                    f"{frame.at[i, 'path']}: size {sizes[i][1]}x{sizes[i][0]} differs from the "
                    f"common {common[1]}x{common[0]} (size_policy: raise)",
                )
    if errors and on_error == "raise":
        listed = "\n  ".join(list(errors.values())[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise DataError(
            f"{len(errors)} bad image(s) in {manifest.source}:\n  {listed}{more}\n"
            f"(set on_error: skip to drop and count them)"
        )
    keep = np.ones(len(frame), dtype=bool)
    for i, msg in errors.items():
        keep[i] = False
        manifest.skipped.append((frame.at[i, "path"], msg))
    manifest.frame = frame[keep].reset_index(drop=True)
    if not len(manifest.frame):
        raise DataError(f"{manifest.source}: every image was bad; nothing left ({len(errors)} skipped)")
    return manifest
