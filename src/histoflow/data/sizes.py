"""Is this data the size the model was trained on?

A checkpoint applied to images of another size or magnification (a 96 px PCam model on 50 px
IDC patches or 224 px BreakHis fields) still runs: every image is resized to the model's input.
The numbers that come out are about a different task (AUC 0.57), so the mismatch is said in
metrics.json, the report and predict's output, and `size_policy: raise` refuses it.

Sizes are read from image headers (no decode) on a seeded sample, or from the `height`/`width`
columns `verify_manifest` adds.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from histoflow.core.errors import DataError
from histoflow.data.datasets import SIZE_POLICIES  # data.size_policy's vocabulary, also for evaluate/predict
from histoflow.data.manifest import Manifest


def image_sizes(manifest: Manifest, max_images: int = 256, seed: int = 0) -> Counter:
    """Counter of (width, height) over a seeded sample of the manifest's image files."""
    frame = manifest.frame
    if "height" in frame.columns and "width" in frame.columns:
        known = frame[frame["height"] > 0]
        if len(known):
            return Counter((int(w), int(h)) for w, h in zip(known["width"], known["height"]))
    files = frame.index[frame["item"] < 0].to_numpy()
    if len(files) > max_images:
        files = np.sort(np.random.default_rng(seed).choice(files, size=max_images, replace=False))
    from PIL import Image

    sizes: Counter = Counter()
    for i in files:
        try:
            with Image.open(frame.at[i, "path"]) as img:
                sizes[img.size] += 1
        except Exception:  # noqa: BLE001 - an unreadable file is the dataset's error to word, later
            continue
    h5 = frame[frame["item"] >= 0]
    if len(h5):
        import h5py

        for path, rows in h5.groupby("path").groups.items():
            try:
                with h5py.File(path, "r") as f:
                    _, h, w = f["x"].shape[:3]
                sizes[(int(w), int(h))] += len(rows)
            except (OSError, KeyError):
                continue
    return sizes


def common_size(manifest: Manifest, max_images: int = 256, seed: int = 0) -> list[int] | None:
    """[width, height] of the most common image size, or None when no image could be read."""
    sizes = image_sizes(manifest, max_images, seed)
    return list(sizes.most_common(1)[0][0]) if sizes else None


def _fmt(size) -> str:
    return f"{size[0]}x{size[1]}"


def size_notes(manifest: Manifest, ckpt, size_policy: str | None = None, source: str = "") -> list[str]:
    """Warnings when images differ in size from the ones the checkpoint was trained on.

    The reference is the training images' common size when the checkpoint records it
    (`source_image_size`), else the model's input (`image_px` square). `size_policy="raise"`
    turns a mismatch into a DataError naming the sizes and the fix.
    """
    if size_policy is not None and size_policy not in SIZE_POLICIES:
        raise DataError(f"size policy must be one of {SIZE_POLICIES}, got {size_policy!r}")
    recorded = ckpt.get("source_image_size")
    expected = tuple(int(v) for v in recorded) if recorded else (ckpt.image_px, ckpt.image_px)
    sizes = image_sizes(manifest)
    other = {s: n for s, n in sizes.items() if s != expected}
    if not other:
        return []
    where = source or manifest.source or "data"
    total = sum(sizes.values())
    listed = ", ".join(f"{_fmt(s)} ({n})" for s, n in sorted(other.items(), key=lambda kv: -kv[1])[:5])
    trained = (
        f"the model was trained on {_fmt(expected)} images" if recorded else f"the model takes {_fmt(expected)} input"
    )
    msg = (
        f"{where}: {sum(other.values())} of {total} sampled images are not the size the checkpoint was trained "
        f"on: {listed}; {trained}"
    )
    if size_policy == "raise":
        raise DataError(
            f"{msg} (size policy: raise). Use data of the model's size and magnification, or "
            f"pass --size-policy resize to resize them anyway (results then describe another task)"
        )
    how = "padded/cropped" if size_policy == "pad" else "resized"
    return [
        f"{msg}; they were {how} to {ckpt.image_px} px, so results may not hold for this data "
        f"(another size often means another magnification); --size-policy raise refuses such data"
    ]
