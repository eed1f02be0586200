"""`histoflow predict`: class probabilities for every image of a folder, CSV or dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from histoflow.checkpoint import load_checkpoint
from histoflow.core.errors import ConfigError
from histoflow.core.io import atomic_path
from histoflow.data.datasets import dataset_for_checkpoint
from histoflow.data.manifest import read_manifest
from histoflow.data.sizes import size_notes
from histoflow.predict.patches import predict_dataset

log = logging.getLogger(__name__)


def predict_to_csv(
    checkpoint: Path,
    data_path: Path,
    out_csv: Path,
    tta: bool = False,
    format: str = "auto",
    batch_size: int = 256,
    workers: int = 2,
    threshold: float = 0.5,
    size_policy: str | None = None,
    quiet: bool = False,
    device: str | None = None,
) -> pd.DataFrame:
    """One row per image: path, p_<class>..., predicted label (and the true label when known).

    `frame.attrs["notes"]` holds warnings (images of another size than the training images:
    resized; `size_policy="raise"` refuses them instead); `frame.attrs["positive_class"]` the
    class `threshold` applies to (binary models)."""
    out_csv = Path(out_csv)
    if out_csv.is_dir():
        raise ConfigError(
            f"{out_csv}: is a folder; --out takes the CSV file to write, e.g. {out_csv / 'predictions.csv'}"
        )
    model, ckpt = load_checkpoint(checkpoint)
    manifest = read_manifest(data_path, format=format)
    run_on = torch.device(device) if device else None
    notes = size_notes(manifest, ckpt, size_policy, str(data_path))
    for note in notes:
        log.warning("%s", note)
    frame = manifest.frame.copy()
    dataset = dataset_for_checkpoint(manifest, ckpt, labelled=False, size_policy=size_policy)  # labels not needed
    probs = predict_dataset(
        model, dataset, batch_size=batch_size, workers=workers, tta=tta, device=run_on, progress=not quiet
    )
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
    with atomic_path(out_csv) as tmp:  # a folder given for the CSV is refused before any work, above
        out.to_csv(tmp, index=False)
    out.attrs["notes"] = notes
    out.attrs["positive_class"] = ckpt.positive_class
    return out
