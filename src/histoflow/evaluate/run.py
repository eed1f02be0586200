"""Evaluate a checkpoint on labelled data: metrics.json plus ROC / PR / confusion plots."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import torch

from histoflow.checkpoint import load_checkpoint
from histoflow.core.errors import DataError
from histoflow.core.io import atomic_path, atomic_write_json
from histoflow.data.datasets import PatchDataset, dataset_for_checkpoint
from histoflow.data.manifest import SPLIT_ALIASES, read_manifest
from histoflow.data.sizes import size_notes
from histoflow.evaluate import plots
from histoflow.evaluate.aggregate import group_columns, group_level_metrics
from histoflow.evaluate.calibration import calibration_summary, reliability_plot
from histoflow.evaluate.environment import environment
from histoflow.evaluate.metrics import compute_metrics
from histoflow.evaluate.operating import bootstrap_ci, operating_points
from histoflow.predict.patches import predict_dataset

log = logging.getLogger(__name__)
TILE_COLUMNS = ("tile_id", "x", "y", "size_px0")  # of tile manifests (histoflow.data.tiles)


def clinical_results(
    y: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    threshold: float = 0.5,
    groups: pd.DataFrame | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Operating points, bootstrap CIs, calibration and patient/slide-level results (JSON-ready)."""
    out: dict = {"calibration": calibration_summary(y, probs)}
    group_cols = group_columns(groups) if groups is not None and len(groups) == len(y) else []
    if len(class_names) == 2 and len(y):
        p = probs[:, 1]
        ops = operating_points(y, p, threshold=threshold)
        ops["positive_class"] = str(class_names[1])
        out["operating_points"] = ops
        thresholds = {row["name"]: row["threshold"] for row in ops["points"]}
        # patients first: patches of one patient are correlated, slides nest within patients
        by = group_cols[0] if group_cols else None
        out["ci"] = bootstrap_ci(
            y,
            p,
            thresholds,
            groups=None if by is None else cast(pd.DataFrame, groups)[by].to_numpy(),  # by: one of its columns
            n_boot=n_boot,
            seed=seed,
            group_name=by or "patient",
        )
        out["aggregate"] = {
            col: group_level_metrics(y, p, cast(pd.DataFrame, groups)[col].to_numpy(), col, threshold)
            for col in group_cols  # only when groups is given
        }
    elif len(class_names) > 2:
        out["operating_points"] = {"points": [], "notes": ["operating points are defined for binary models only"]}
    return out


def evaluate_split(
    model,
    ckpt,
    dataset: PatchDataset,
    out_dir: Path,
    name: str,
    tta: bool,
    workers: int = 2,
    threshold: float = 0.5,
    groups: pd.DataFrame | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> tuple[dict, np.ndarray]:
    """Metrics, clinical results and plots of one split. `groups`: patient/slide per row (or None)."""
    started = time.perf_counter()
    probs = predict_dataset(
        model, dataset, batch_size=batch_size, workers=workers, tta=tta, device=device, progress=False
    )
    y = dataset.labels
    result = compute_metrics(y, probs, ckpt.class_names, threshold)
    result.update(clinical_results(y, probs, ckpt.class_names, threshold, groups, n_boot, seed))
    result["tta"] = tta
    result["temperature"] = ckpt.temperature
    result["seconds"] = round(time.perf_counter() - started, 2)
    report, names = out_dir / "report", ckpt.class_names
    cap = plots.caption(name, tta, len(y))
    positive = names[1] if len(names) == 2 else None
    reliability_plot(result["calibration"], report / f"calibration_{name}.png", caption=cap, positive=positive)
    plots.roc_plot(y, probs, names, report / f"roc_{name}.png", cap, ci=result.get("ci"))
    plots.pr_plot(y, probs, names, report / f"pr_{name}.png", cap)
    if result.get("confusion_matrix") is not None:
        cut = threshold if len(names) == 2 else None
        plots.confusion_plot(result["confusion_matrix"], names, report / f"confusion_{name}.png", cap, cut)
    frame = pd.DataFrame({"path": [dataset.path(i) for i in range(len(dataset))], "label": y})
    if groups is not None and len(groups) == len(frame):
        # patient/slide when known, and where a tile lies on its slide (whole-slide data)
        for col in [*group_columns(groups), *(c for c in TILE_COLUMNS if c in groups)]:
            frame[col] = groups[col].to_numpy()
    for k, cname in enumerate(ckpt.class_names):
        frame[f"p_{cname}"] = probs[:, k]
    with atomic_path(out_dir / f"predictions_{name}.csv") as tmp:
        frame.to_csv(tmp, index=False)
    return result, probs


SKIPPED_LISTED = 50  # files named in metrics.json; the count is always the total


def skipped_summary(skipped: list[tuple[str, str]]) -> dict:
    """Images `data.on_error: skip` left out: the total and the first files with why."""
    return {
        "count": len(skipped),
        "files": [{"path": str(p), "reason": str(why)} for p, why in skipped[:SKIPPED_LISTED]],
        "listed": min(len(skipped), SKIPPED_LISTED),
    }


def evaluate_run(run_dir: Path, data, tta: bool = False, train_seconds: float | None = None) -> dict:
    """After training: best checkpoint on val (and test) data -> metrics.json, plots."""
    run_dir = Path(run_dir)
    model, ckpt = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    results: dict = {
        "checkpoint": str(run_dir / "checkpoints" / "best.pt"),
        "epoch": ckpt.epoch,
        "positive_class": ckpt.positive_class,
    }
    if train_seconds is not None:
        results["train_seconds"] = round(train_seconds, 1)
    results["environment"] = environment()
    skipped = getattr(getattr(data, "manifest", None), "skipped", None) or []
    results["skipped"] = skipped_summary(skipped)
    seed = ckpt.seed
    for name, ds in (("val", data.val), ("test", data.test)):
        if ds is not None and len(ds):
            frame = data.manifest.split(name).frame
            groups = frame[["patient", "slide", *(c for c in TILE_COLUMNS if c in frame)]]
            results[name], _ = evaluate_split(model, ckpt, ds, run_dir, name, tta=False, groups=groups, seed=seed)
            if tta:
                results[f"{name}_tta"], _ = evaluate_split(
                    model, ckpt, ds, run_dir, f"{name}_tta", tta=True, groups=groups, seed=seed
                )
    cohort = getattr(data, "cohort", None)
    if cohort is not None:  # whole-slide data: how the tile predictions read per slide
        results["slides"] = slide_results(run_dir, ckpt.class_names, cohort.tiles_dir, seed)
    plots.history_plot(run_dir / "history.csv", run_dir / "report" / "training_curves.png", best_epoch=ckpt.epoch)
    atomic_write_json(run_dir / "metrics.json", results)
    return results


def slide_results(run_dir: Path, class_names: list[str], tiles_dir: Path | None, seed: int = 0) -> dict:
    """Slide-level results of a run trained on tiles, from its predictions_<split>.csv: every
    aggregation per slide, rules fixed on the validation slides (histoflow.evaluate.slide_results).
    Integer class names with more than two classes (a score 1/2/3) are read as ordinal."""
    from histoflow.evaluate.slide_results import evaluate_slides
    from histoflow.evaluate.slide_scores import labels_from_tiles

    tiles = {
        split: pd.read_csv(path, dtype={"slide": str, "patient": str})
        for split in ("val", "test")
        if (path := run_dir / f"predictions_{split}.csv").is_file()
    }
    if not tiles:
        return {}
    labelled = [labels_from_tiles(t, class_names)[0].assign(split=split) for split, t in tiles.items()]
    ordinal = len(class_names) > 2 and all(c.lstrip("-").isdigit() for c in class_names)
    return evaluate_slides(
        tiles, pd.concat(labelled), class_names, ordinal=ordinal, seed=seed, out_dir=run_dir, tiling_dir=tiles_dir
    )


def labelled_manifest(
    data_path: Path,
    format: str = "auto",
    split: str | None = None,
    unlabelled_hint: str = "use `histoflow predict` for unlabelled data",
):
    """The (optionally one split of a) labelled manifest that evaluation and explanation need."""
    manifest = read_manifest(data_path, format=format)
    if split:
        split = SPLIT_ALIASES.get(split.lower(), split)  # val, valid, validation: one split
        if split not in manifest.splits:
            raise DataError(f"{data_path}: no split {split!r} (splits: {manifest.splits or 'none'})")
        manifest = manifest.split(split)
    if not manifest.labelled:
        raise DataError(f"{data_path}: images are unlabelled; {unlabelled_hint}")
    return manifest


def evaluate_checkpoint(
    checkpoint: Path,
    data_path: Path,
    out: Path,
    split: str | None = None,
    tta: bool = False,
    format: str = "auto",
    threshold: float = 0.5,
    size_policy: str | None = None,
    batch_size: int = 256,
    device: str | None = None,
) -> dict:
    """`histoflow evaluate`: a checkpoint on any labelled patch data.

    `size_policy`: how images of another size than the training images are treated: resize or
    pad (with a warning in metrics.json and the report), raise (refused); None: as in training."""
    model, ckpt = load_checkpoint(checkpoint)
    manifest = labelled_manifest(data_path, format, split)
    notes = size_notes(manifest, ckpt, size_policy, str(data_path))
    for note in notes:
        log.warning("%s", note)
    dataset = dataset_for_checkpoint(manifest, ckpt, size_policy=size_policy)
    out = Path(out)
    name = split or "data"
    result, _ = evaluate_split(
        model,
        ckpt,
        dataset,
        out,
        name,
        tta=tta,
        threshold=threshold,
        groups=manifest.frame[["patient", "slide"]],
        batch_size=batch_size,
        device=torch.device(device) if device else None,
    )
    result["notes"] = notes + list(result.get("notes") or [])
    payload = {
        "checkpoint": str(checkpoint),
        "data": str(data_path),
        "split": split,
        "positive_class": ckpt.positive_class,
        name: result,
        "notes": notes,
        "environment": environment(),
    }
    atomic_write_json(out / "metrics.json", payload)
    return payload
