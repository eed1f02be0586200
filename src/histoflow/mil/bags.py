"""MIL bags from real labelled patches (PCam): test MIL where real slides are too few.

A "patient" is a disjoint pool of patches; its bags draw from that pool only, so splitting bags
by patient never puts the same patch on both sides. Each bag holds `bag_size` patches of which
n_tumour are tumour; half the bags get n_tumour in [0, k-1] (negative), half in
[k, max_fraction * bag_size] (positive: "at least k tumour patches"). The ordinal grade comes
from the tumour fraction (thresholds `grade_cuts`, like a proliferation score 1/2/3).

Layout written (the same one `histoflow embed` writes for slides, so train-mil reads both):
    OUT/bags.csv                        bag_id, patient, label, grade, n_tumour, tumour_fraction, bag_size
    OUT/<bag_id>/embeddings.npy         (bag_size, F)
    OUT/<bag_id>/instance_labels.npy    (bag_size,) 0/1: to score attention against truth
    OUT/bags.json                       how the bags were made, and the embedding checkpoint
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from histoflow.config.slides import BagConfig, SlidePredictConfig
from histoflow.core.errors import DataError
from histoflow.core.io import atomic_write_bytes, atomic_write_json

__all__ = ["build_pcam_bags", "grade_of", "plan_bags"]

log = logging.getLogger(__name__)


def grade_of(fraction: float, cuts=(0.1, 0.3)) -> int:
    return 1 + int(fraction >= cuts[0]) + int(fraction >= cuts[1])


def plan_bags(labels: np.ndarray, cfg: BagConfig) -> list[dict]:
    """Bag recipes (patch indices into `labels`) with their labels; pure and seeded."""
    rng = np.random.default_rng(cfg.seed)
    pos, neg = rng.permutation(np.flatnonzero(labels == 1)), rng.permutation(np.flatnonzero(labels == 0))
    pools = [(p, n) for p, n in zip(np.array_split(pos, cfg.patients), np.array_split(neg, cfg.patients))]
    top = int(cfg.max_fraction * cfg.bag_size)
    if cfg.k < 1 or cfg.k > top:
        raise DataError(f"bags: k={cfg.k} must be in [1, {top}] for bag_size {cfg.bag_size}")
    bags = []
    for pid, (p_pool, n_pool) in enumerate(pools):
        if len(n_pool) < cfg.bag_size or len(p_pool) < top:
            raise DataError(f"bags: patient pool {pid} too small ({len(p_pool)} tumour, {len(n_pool)} normal patches)")
        for b in range(cfg.bags_per_patient):
            n_t = int(rng.integers(0, cfg.k)) if b % 2 == 0 else int(rng.integers(cfg.k, top + 1))
            idx = np.concatenate(
                [rng.choice(p_pool, n_t, replace=False), rng.choice(n_pool, cfg.bag_size - n_t, replace=False)]
            )
            idx = rng.permutation(idx)
            frac = n_t / cfg.bag_size
            bags.append(
                {
                    "bag_id": f"p{pid:03d}_b{b:03d}",
                    "patient": f"p{pid:03d}",
                    "label": int(n_t >= cfg.k),
                    "grade": grade_of(frac, cfg.grade_cuts),
                    "n_tumour": n_t,
                    "tumour_fraction": round(frac, 4),
                    "bag_size": cfg.bag_size,
                    "indices": idx,
                }
            )
    return bags


def build_pcam_bags(
    pcam_root: str | Path,
    out: str | Path,
    checkpoint: str | Path,
    cfg: BagConfig | None = None,
    batch_size: int = 128,
    workers: int | None = None,
) -> dict:
    """Embed the split's patches once with the frozen checkpoint backbone, then write the bags."""
    from histoflow.mil.embed import embed_images, save_npy
    from histoflow.predict.slide import load_predictor

    cfg = cfg or BagConfig()
    root, out = Path(pcam_root) / cfg.split, Path(out)
    paths: list[Path] = []
    label_list: list[int] = []
    for lab in (0, 1):
        files = sorted((root / str(lab)).glob("*.jpg")) + sorted((root / str(lab)).glob("*.png"))
        paths += files
        label_list += [lab] * len(files)
    if not paths:
        raise DataError(f"{root}: no patches under 0/ and 1/ (expected a PCam-style class-folder split)")
    labels = np.asarray(label_list)
    # patch checkpoints carry no mpp; embedding files needs none (patches are used as they are)
    pred = load_predictor(checkpoint, SlidePredictConfig(mpp=1.0, batch_size=batch_size, workers=workers))
    cache = out / "patches.npy"
    if (
        cache.is_file()
        and (out / "patches.txt").is_file()
        and (out / "patches.txt").read_text().splitlines() == [f"{pred.fingerprint}"] + [str(p) for p in paths]
    ):
        feats = np.load(cache)
    else:
        feats = embed_images(pred, paths, progress=True)
        save_npy(cache, feats.astype(np.float32))
        atomic_write_bytes(out / "patches.txt", "\n".join([pred.fingerprint] + [str(p) for p in paths]).encode())
    bags = plan_bags(labels, cfg)
    for bag in bags:
        d = out / bag["bag_id"]
        d.mkdir(parents=True, exist_ok=True)
        save_npy(d / "embeddings.npy", feats[bag["indices"]])
        save_npy(d / "instance_labels.npy", labels[bag["indices"]].astype(np.int8))
    buf = io.StringIO()
    cols = ["bag_id", "patient", "label", "grade", "n_tumour", "tumour_fraction", "bag_size"]
    w = csv.DictWriter(buf, cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(bags)
    atomic_write_bytes(out / "bags.csv", buf.getvalue().encode())
    meta = {
        "config": cfg.model_dump(),
        "pcam_root": str(pcam_root),
        "patches": len(paths),
        "bags": len(bags),
        "positive_bags": int(sum(b["label"] for b in bags)),
        "grades": {g: int(sum(b["grade"] == g for b in bags)) for g in (1, 2, 3)},
        "embedding": {
            "checkpoint": str(checkpoint),
            "checkpoint_fingerprint": pred.fingerprint,
            "features": int(feats.shape[1]),
        },
    }
    atomic_write_json(out / "bags.json", meta)
    return meta
