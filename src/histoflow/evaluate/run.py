"""Evaluate a checkpoint on labelled data: metrics.json plus ROC / PR / confusion plots."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.checkpoint import load_checkpoint
from histoflow.data.datasets import PatchDataset, dataset_for_checkpoint
from histoflow.data.manifest import read_manifest
from histoflow.errors import DataError
from histoflow.evaluate import plots
from histoflow.evaluate.metrics import compute_metrics
from histoflow.predict.patches import predict_dataset

log = logging.getLogger(__name__)


def write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    return path


def evaluate_split(model, meta: dict, dataset: PatchDataset, out_dir: Path, name: str, tta: bool,
                   workers: int = 2, threshold: float = 0.5) -> tuple[dict, np.ndarray]:
    started = time.perf_counter()
    probs = predict_dataset(model, dataset, workers=workers, tta=tta, progress=False)
    y = dataset.labels
    result = compute_metrics(y, probs, meta["class_names"], threshold)
    result["tta"] = tta
    result["seconds"] = round(time.perf_counter() - started, 2)
    report = out_dir / "report"
    plots.roc_plot(y, probs, meta["class_names"], report / f"roc_{name}.png")
    plots.pr_plot(y, probs, meta["class_names"], report / f"pr_{name}.png")
    if result.get("confusion_matrix") is not None:
        plots.confusion_plot(result["confusion_matrix"], meta["class_names"], report / f"confusion_{name}.png")
    frame = pd.DataFrame({"path": [dataset.path(i) for i in range(len(dataset))], "label": y})
    for k, cname in enumerate(meta["class_names"]):
        frame[f"p_{cname}"] = probs[:, k]
    frame.to_csv(out_dir / f"predictions_{name}.csv", index=False)
    return result, probs


def evaluate_run(run_dir: Path, data, tta: bool = False, train_seconds: float | None = None) -> dict:
    """After training: best checkpoint on val (and test) data -> metrics.json, plots."""
    run_dir = Path(run_dir)
    model, meta = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    results: dict = {"checkpoint": str(run_dir / "checkpoints" / "best.pt"), "epoch": meta.get("epoch")}
    if train_seconds is not None:
        results["train_seconds"] = round(train_seconds, 1)
    for name, ds in (("val", data.val), ("test", data.test)):
        if ds is not None and len(ds):
            results[name], _ = evaluate_split(model, meta, ds, run_dir, name, tta=False)
            if tta:
                results[f"{name}_tta"], _ = evaluate_split(model, meta, ds, run_dir, f"{name}_tta", tta=True)
    plots.history_plot(run_dir / "history.csv", run_dir / "report" / "training_curves.png")
    write_json(run_dir / "metrics.json", results)
    return results


def evaluate_checkpoint(checkpoint: Path, data_path: Path, out: Path, split: str | None = None, tta: bool = False,
                        format: str = "auto", threshold: float = 0.5) -> dict:
    """`histoflow evaluate`: a checkpoint on any labelled patch data."""
    model, meta = load_checkpoint(checkpoint)
    manifest = read_manifest(data_path, format=format)
    if split:
        if split not in manifest.splits:
            raise DataError(f"{data_path}: no split {split!r} (splits: {manifest.splits or 'none'})")
        manifest = manifest.split(split)
    if not manifest.labelled:
        raise DataError(f"{data_path}: images are unlabelled; use `histoflow predict` for unlabelled data")
    dataset = dataset_for_checkpoint(manifest, meta)
    out = Path(out)
    name = split or "data"
    result, _ = evaluate_split(model, meta, dataset, out, name, tta=tta, threshold=threshold)
    payload = {"checkpoint": str(checkpoint), "data": str(data_path), "split": split, name: result}
    write_json(out / "metrics.json", payload)
    return payload
