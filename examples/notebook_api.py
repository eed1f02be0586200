"""histoflow from Python, as in a notebook: manifest -> fit -> evaluate -> predict in memory -> a slide.

Run: python examples/notebook_api.py [OUT]   (real data from $HISTOFLOW_DATA, default ../shared/data;
about a minute on 2 CPU cores). CI runs it (tests/test_examples.py), so it stays true.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

import histoflow

DATA = Path(os.environ.get("HISTOFLOW_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/notebook_api")

# 1. Every image with its label, patient and split: one table (pandas) you can filter.
manifest = histoflow.read_manifest(DATA / "pcam")
print(manifest.class_names, len(manifest), manifest.frame["split"].value_counts().to_dict())
small = manifest.subset(np.r_[0:400, 10000:10400, 20000:20200, 21500:21700])  # a few of each class and split

# 2. A recipe by name, made small with overrides; then train on the Manifest itself.
cfg = histoflow.load_config(
    "pcam_simple_cnn",
    ["train.epochs=1", "data.cache=none", "model.params={widths: [8, 16], depth: 1}", "data.mpp=0.972"],
)
run_dir = histoflow.run(cfg, OUT / "run", manifest=small, quiet=True)
checkpoint = histoflow.Checkpoint.read(run_dir / "checkpoints" / "best.pt")
print("classes", checkpoint.class_names, "positive", checkpoint.positive_class, "mpp", checkpoint.mpp)

# 3. Evaluate on other labelled images (a folder), with bootstrap CIs in the result.
result = histoflow.evaluate_checkpoint(checkpoint.path, DATA / "idc" / "8975", OUT / "idc")
print("IDC AUC", result["data"]["auc"], "(another dataset and size: a deliberately hard transfer)")

# 4. Probabilities for images in memory: arrays (uint8 0-255 or float 0-1) and paths, mixed.
rng = np.random.default_rng(0)
arrays = rng.integers(0, 256, size=(2, 96, 96, 3), dtype=np.uint8)
first = small.frame["path"].iloc[0]
probs = histoflow.predict_images(checkpoint, [arrays[0], arrays[1] / 255.0, first])
print("in-memory probabilities", probs.round(3).tolist())

# 5. A whole slide: heatmap, GeoJSON and slide scores; no --mpp needed (the checkpoint records it).
summary = histoflow.predict_slides(
    checkpoint.path, [DATA / "wsi" / "cmu-1-small-region.svs"], OUT / "slides", progress=False
)
print("slides complete", summary["complete"], "failed", summary["failed"])
