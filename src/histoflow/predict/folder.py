"""`histoflow predict`: class probabilities for every image of a folder, CSV or dataset."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from histoflow.checkpoint import load_checkpoint
from histoflow.core.io import atomic_path
from histoflow.data.datasets import dataset_for_checkpoint
from histoflow.data.manifest import read_manifest
from histoflow.predict.patches import predict_dataset


def predict_to_csv(checkpoint: Path, data_path: Path, out_csv: Path, tta: bool = False, format: str = "auto",
                   batch_size: int = 256, workers: int = 2, threshold: float = 0.5) -> pd.DataFrame:
    """One row per image: path, p_<class>..., predicted label (and the true label when known)."""
    model, ckpt = load_checkpoint(checkpoint)
    manifest = read_manifest(data_path, format=format)
    frame = manifest.frame.copy()
    dataset = dataset_for_checkpoint(manifest, ckpt, labelled=False)  # labels are not needed to predict
    probs = predict_dataset(model, dataset, batch_size=batch_size, workers=workers, tta=tta, progress=True)
    names = ckpt.class_names
    out = pd.DataFrame({"path": frame["path"]})
    if manifest.labelled:
        out["label"] = frame["label"]
    for k, name in enumerate(names):
        out[f"p_{name}"] = probs[:, k]
    if len(names) == 2:
        out["predicted"] = [names[1] if p >= threshold else names[0] for p in probs[:, 1]]
    else:
        out["predicted"] = [names[k] for k in probs.argmax(1)]
    with atomic_path(out_csv) as tmp:
        out.to_csv(tmp, index=False)
    return out
