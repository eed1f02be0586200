"""Data loading: images/s through PatchDataset + DataLoader (2 workers) on the real PCam folder,
against the raw decode rate of the same files in one loop (the baseline). Target: the Dataset
delivers at least 90% of the raw decode rate per core (per worker)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from histoflow.data.datasets import PatchDataset
from histoflow.data.images import read_image
from histoflow.data.manifest import read_manifest

DATA = Path(os.environ.get("HISTOFLOW_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main(n: int = 6000, workers: int = 2, batch_size: int = 256) -> dict:
    pcam = DATA / "pcam" / "train"
    if not pcam.exists():
        print(json.dumps({"bench": "data_loading", "skipped": f"no data at {pcam}"}))
        return {}
    manifest = read_manifest(pcam)
    idx = np.random.default_rng(0).choice(len(manifest), size=min(n, len(manifest)), replace=False)
    manifest = manifest.subset(np.sort(idx))
    paths = manifest.frame["path"].tolist()
    for p in paths:  # warm the page cache for both contenders alike
        Path(p).read_bytes()
    results = {"raw": [], "dataset": []}
    for _ in range(2):  # interleave the contenders so machine noise hits both
        start = time.perf_counter()
        for p in paths:
            read_image(p)
        results["raw"].append(len(paths) / (time.perf_counter() - start))
        ds = PatchDataset(manifest, image_px=96)
        loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, persistent_workers=False)
        start = time.perf_counter()
        seen = 0
        for x, _ in loader:
            seen += len(x)
        results["dataset"].append(seen / (time.perf_counter() - start))
    raw, dataset = max(results["raw"]), max(results["dataset"])
    out = {"bench": "data_loading", "images": len(paths), "workers": workers, "batch_size": batch_size,
           "raw_decode_img_s_one_core": round(raw), "dataset_img_s": round(dataset),
           "dataset_img_s_per_worker": round(dataset / workers), "ratio_per_core": round(dataset / workers / raw, 3),
           "target_ratio_per_core": 0.9, "torch": torch.__version__, "loadavg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
