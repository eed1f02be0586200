"""Normal vs atypical mitotic figures: slide-grouped k-fold cross-validation on AMi-Br crops.

Each fold's held-out slides are its test set; a slide-grouped part of the remaining slides is
its validation set (best checkpoint, early stopping, and the decision threshold: Youden's J on
validation, so balanced accuracy is never tuned on the slides it is reported on). Every crop is
tested exactly once. Reported: pooled out-of-fold ROC AUC and balanced accuracy with 95%
percentile-bootstrap CIs that resample whole slides (crops of one slide are not independent),
and the per-fold mean and spread. Each fold is an ordinary `histoflow train` run folder; a
finished fold is not trained again, so an interrupted study resumes at its first unfinished fold.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.config import RunConfig, load_config
from histoflow.config.mitosis import AtypiaCVConfig
from histoflow.core.errors import DataError
from histoflow.core.io import atomic_path, atomic_write_json
from histoflow.core.paths import expand
from histoflow.data.amibr import read_amibr
from histoflow.data.manifest import Manifest
from histoflow.data.splits import kfold_manifests, split_manifest

log = logging.getLogger(__name__)
POSITIVE = "atypical"


def fold_manifests(manifest: Manifest, cfg: AtypiaCVConfig) -> list[Manifest]:
    """Per fold: split test = the fold's held-out slides, val = a slide-grouped part of the rest."""
    out = []
    for k, fold in enumerate(kfold_manifests(manifest, cfg.folds, group_by="slide", seed=cfg.seed)):
        frame = fold.frame.copy()
        held = (frame["split"] == "val").to_numpy()
        rest = fold.subset(~held)
        rest = split_manifest(rest, cfg.val_fraction, 0.0, group_by="slide", seed=cfg.seed + 100 + k)
        frame.loc[held, "split"] = "test"
        frame.loc[~held, "split"] = rest.frame["split"].to_numpy()
        out.append(Manifest(frame, manifest.class_names, "csv", manifest.source))
    return out


def _youden(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, p)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def _scores(y: np.ndarray, p: np.ndarray, called: np.ndarray) -> dict:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    return {
        "auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None,
        "balanced_accuracy": float(balanced_accuracy_score(y, called)),
        "sensitivity": float(called[y == 1].mean()) if (y == 1).any() else None,
        "specificity": float(1 - called[y == 0].mean()) if (y == 0).any() else None,
        "n": int(len(y)),
    }


def slide_bootstrap(
    y: np.ndarray, p: np.ndarray, called: np.ndarray, slides: np.ndarray, n_boot: int, seed: int
) -> dict:
    """95% percentile CIs of AUC and balanced accuracy, resampling slides with replacement.

    Written here (a few lines) because scikit-learn's and scipy's bootstraps resample items, not
    groups; thresholds stay as chosen per fold."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    rng = np.random.default_rng(seed)
    _, inverse = np.unique(slides, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    aucs, baccs = [], []
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        if len(np.unique(y[idx])) < 2:
            continue
        aucs.append(roc_auc_score(y[idx], p[idx]))
        baccs.append(balanced_accuracy_score(y[idx], called[idx]))
    q = [0.025, 0.975]
    return {
        "auc": [float(v) for v in np.quantile(aucs, q)],
        "balanced_accuracy": [float(v) for v in np.quantile(baccs, q)],
        "n_boot": n_boot,
        "resampled": "slides",
        "slides": len(members),
    }


def default_run_config() -> RunConfig:
    """The built-in recipe (configs/mitosis/atypia_cnn.yaml holds the same, to edit)."""
    return RunConfig.model_validate(
        {
            "name": "atypia_cnn",
            "data": {"image_px": 128, "crop_px": 64, "mpp": 0.25, "cache": "memory", "num_workers": 0,
                     "positive_class": POSITIVE, "balance": {"loss_weights": True}},
            "augment": {"dihedral": True, "hed_jitter": {"sigma": 0.05, "bias": 0.05},
                        "colour_jitter": {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "p": 0.5},
                        "where": "batch"},
            "model": {"name": "simple_cnn", "params": {"widths": [16, 32, 64, 128], "depth": 1, "pool_first": True},
                      "dropout": 0.2},
            "train": {"epochs": 30, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.05},
                      "scheduler": {"name": "onecycle", "pct_start": 0.25}, "label_smoothing": 0.05, "tta": True},
        }
    )  # fmt: skip


def _fold_done(fold_dir: Path) -> bool:
    return (fold_dir / "predictions_test.csv").is_file() and (fold_dir / "predictions_val.csv").is_file()


def atypia_cv(cfg: AtypiaCVConfig, out: str | Path, quiet: bool = False) -> dict:
    """Train and test every fold (skipping finished ones), then pool; writes cv.json and oof.csv."""
    from histoflow.workflows.run import run

    out = Path(out)
    ami = read_amibr(expand(cfg.data))
    base = load_config(cfg.run) if cfg.run else default_run_config()
    folds = fold_manifests(ami.atypia_manifest(), cfg)
    rows, per_fold = [], []
    for k, fold in enumerate(folds):
        fold_dir = out / f"fold{k}"
        manifest_csv = out / "manifests" / f"fold{k}.csv"
        fold.to_csv(manifest_csv)
        if not _fold_done(fold_dir):
            data = base.data.model_copy(update={"path": str(manifest_csv.resolve()), "positive_class": POSITIVE})
            run(base.model_copy(update={"name": f"{base.name}_fold{k}", "data": data}), fold_dir, quiet=quiet)
        val = pd.read_csv(fold_dir / "predictions_val.csv")
        test = pd.read_csv(fold_dir / "predictions_test.csv")
        column = f"p_{POSITIVE}"
        if column not in test.columns:
            raise DataError(f"{fold_dir}: predictions have no {column!r} column (classes of that run differ)")
        threshold = _youden((val["label"] == 1).to_numpy(int), val[column].to_numpy())
        y = (test["label"] == 1).to_numpy(int)  # evaluate writes class indices: 1 is the positive class
        p = test[column].to_numpy()
        called = (p >= threshold).astype(int)
        per_fold.append({"fold": k, "threshold": threshold, **_scores(y, p, called)})
        slide_of = dict(zip(fold.frame["path"], fold.frame["slide"]))
        rows.append(pd.DataFrame({"path": test["path"], "slide": test["path"].map(slide_of), "fold": k,
                                  "label": np.where(y == 1, POSITIVE, "normal"), "p_atypical": p,
                                  "called": called, "threshold": threshold}))  # fmt: skip
    oof = pd.concat(rows, ignore_index=True)
    if oof["slide"].isna().any():
        raise DataError(f"{out}: some test predictions do not match the fold manifests' paths")
    y, p, called = (oof["label"] == POSITIVE).to_numpy(int), oof["p_atypical"].to_numpy(), oof["called"].to_numpy()
    folds_frame = pd.DataFrame(per_fold)
    summary = {
        "task": "AMi-Br normal vs atypical mitotic figures",
        "folds": cfg.folds,
        "crops": int(len(oof)),
        "slides": int(oof["slide"].nunique()),
        "class_counts": {k: int(v) for k, v in oof["label"].value_counts().items()},
        "pooled": _scores(y, p, called),
        "ci95": slide_bootstrap(y, p, called, oof["slide"].to_numpy(), cfg.n_boot, cfg.seed),
        "per_fold": per_fold,
        "fold_mean": {m: float(folds_frame[m].mean()) for m in ("auc", "balanced_accuracy")},
        "fold_sd": {m: float(folds_frame[m].std(ddof=1)) for m in ("auc", "balanced_accuracy")},
        "config": cfg.model_dump(mode="json"),
        "run_config": base.model_dump(mode="json"),
    }
    with atomic_path(out / "oof.csv") as tmp:
        oof.to_csv(tmp, index=False)
    atomic_write_json(out / "cv.json", summary)
    return summary
