"""A dataset summary a user reads before training: counts, sizes, colour statistics, duplicates."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np

from histoflow.data.manifest import Manifest


def channel_stats(
    manifest: Manifest,
    max_images: int = 2000,
    seed: int = 0,
    image_px: int | None = None,
    preprocess=None,
    crop_px: int | None = None,
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] over a seeded sample of images."""
    from histoflow.data.datasets import PatchDataset

    rng = np.random.default_rng(seed)
    n = len(manifest)
    idx = np.sort(rng.choice(n, size=min(n, max_images), replace=False))
    ds = PatchDataset(
        manifest.subset(idx),
        image_px=image_px,
        class_names=manifest.class_names,
        preprocess=preprocess,
        crop_px=crop_px,
    )
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for i in range(len(ds)):
        px = ds.load(i).reshape(-1, 3).astype(np.float64) / 255.0
        total += px.sum(0)
        total_sq += (px**2).sum(0)
        count += px.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def find_duplicates(manifest: Manifest) -> list[list[str]]:
    """Groups of byte-identical files (hash of file content), largest first."""
    by_hash: dict[str, list[str]] = {}
    for path, item in zip(manifest.frame["path"], manifest.frame["item"]):
        if item >= 0:
            continue
        with open(path, "rb") as f:
            digest = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
        by_hash.setdefault(digest, []).append(path)
    return sorted((g for g in by_hash.values() if len(g) > 1), key=len, reverse=True)


def summarize(manifest: Manifest, stats_images: int = 2000, duplicates: bool = True) -> dict:
    """A JSON-able summary: counts per class and split, sizes, mean/std, duplicates, skips."""
    frame = manifest.frame
    counts = (
        frame.assign(split=frame["split"].replace("", "(none)"))
        .groupby(["split", "label"])
        .size()
        .unstack(fill_value=0)
    )
    summary: dict = {
        "source": manifest.source,
        "format": manifest.format,
        "n_images": int(len(frame)),
        "classes": manifest.class_names,
        "counts": {split: {str(k): int(v) for k, v in row.items()} for split, row in counts.iterrows()},
        "patients": int(frame.loc[frame["patient"] != "", "patient"].nunique()),
        "slides": int(frame.loc[frame["slide"] != "", "slide"].nunique()),
    }
    if "height" in frame.columns:
        sizes = Counter(f"{w}x{h}" for w, h in zip(frame["width"], frame["height"]) if h > 0)
        summary["image_sizes"] = dict(sizes.most_common())
    if "mode" in frame.columns:
        modes = Counter(m for m in frame["mode"] if m and m != "RGB")
        if modes:
            summary["converted_to_rgb"] = dict(modes)
    mean, std = channel_stats(manifest, max_images=stats_images)
    summary["channel_mean"], summary["channel_std"] = mean, std
    if duplicates:
        groups = find_duplicates(manifest)
        summary["duplicate_groups"] = len(groups)
        summary["duplicate_files"] = int(sum(len(g) - 1 for g in groups))
        split_of = dict(zip(frame["path"], frame["split"]))
        cross = [g for g in groups if len({split_of[p] for p in g}) > 1]
        summary["duplicates_across_splits"] = len(cross)
    summary["skipped"] = len(manifest.skipped)
    if manifest.skipped:
        summary["skipped_files"] = [f"{p}: {why}" for p, why in manifest.skipped[:50]]
    return summary
