"""Calibration: reliability diagram, expected calibration error, temperature scaling.

ECE comes from torchmetrics and the reliability curve from scikit-learn. Temperature scaling
(Guo et al. 2017) is fitted on validation probabilities: logits are recovered from them (exact
for a sigmoid; for a softmax, log p differs from the logits by a per-row constant, which the
softmax ignores), so it needs no second pass of the model over the images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from histoflow.core.errors import DataError

log = logging.getLogger(__name__)
EPS = 1e-7


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float | None:
    """ECE (L1, equal-width bins) of (N, C) probabilities; None without predictions."""
    from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

    y = np.asarray(y)
    if len(y) == 0:
        return None
    t_y = torch.as_tensor(np.array(y), dtype=torch.long)
    t_p = torch.as_tensor(np.asarray(probs), dtype=torch.float32)
    if t_p.shape[1] == 2:
        value = binary_calibration_error(t_p[:, 1].contiguous(), t_y, n_bins=n_bins, norm="l1")
    else:
        value = multiclass_calibration_error(t_p, t_y, num_classes=t_p.shape[1], n_bins=n_bins, norm="l1")
    return round(float(value), 6)


def reliability_curve(y: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict:
    """Observed frequency vs mean predicted probability per bin (positive class, or top class)."""
    from sklearn.calibration import calibration_curve

    y = np.asarray(y)
    probs = np.asarray(probs)
    if len(y) == 0:
        return {"kind": None, "mean_predicted": [], "observed": [], "count": []}
    if probs.shape[1] == 2:
        kind, hit, conf = "positive class", (y == 1).astype(int), probs[:, 1]
    else:  # multi-class: confidence of the predicted class vs whether it was right
        kind, hit, conf = "top-1 confidence", (probs.argmax(1) == y).astype(int), probs.max(1)
    observed, predicted = calibration_curve(hit, conf, n_bins=n_bins, strategy="uniform")
    counts = np.histogram(conf, bins=np.linspace(0, 1, n_bins + 1))[0]
    return {
        "kind": kind,
        "mean_predicted": predicted.round(6).tolist(),
        "observed": observed.round(6).tolist(),
        "count": [int(c) for c in counts if c > 0],
    }


def logits_from_probs(probs: np.ndarray) -> torch.Tensor:
    p = torch.as_tensor(np.asarray(probs), dtype=torch.float64).clamp(EPS, 1 - EPS)
    if p.shape[1] == 2:
        return torch.logit(p[:, 1])  # the model's single logit
    return torch.log(p)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    z = logits_from_probs(probs) / temperature
    if z.ndim == 1:
        p = torch.sigmoid(z)
        return torch.stack([1 - p, p], 1).float().numpy()
    return torch.softmax(z, 1).float().numpy()


def fit_temperature(y: np.ndarray, probs: np.ndarray, source: str = "validation predictions") -> float:
    """The temperature T > 0 minimising the NLL of logits / T (LBFGS on log T, so T stays positive)."""
    y = np.asarray(y)
    if len(y) == 0:
        raise DataError(f"{source}: no predictions to fit a temperature on")
    if len(np.unique(y)) < 2:
        raise DataError(f"{source}: one class only; a temperature fitted on it would be meaningless")
    z = logits_from_probs(probs)
    target = torch.as_tensor(np.array(y), dtype=torch.float64 if z.ndim == 1 else torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.BCEWithLogitsLoss() if z.ndim == 1 else torch.nn.CrossEntropyLoss()

    def closure():
        opt.zero_grad()
        loss = loss_fn(z / log_t.exp(), target)
        loss.backward()
        return loss

    opt.step(closure)
    temperature = float(log_t.detach().exp())
    if not np.isfinite(temperature) or temperature <= 0:
        raise DataError(f"{source}: temperature fit diverged ({temperature})")
    return round(temperature, 6)


def calibration_summary(y, probs, n_bins: int = 10) -> dict:
    return {"ece": expected_calibration_error(y, probs), "reliability": reliability_curve(y, probs, n_bins)}


def reliability_plot(
    summary: dict, path, title: str = "Reliability", caption: str = "", positive: str | None = None
) -> Path | None:
    """Observed frequency against predicted probability per bin, with the ECE in the title;
    `caption`: the evaluation (split, TTA), `positive`: the class a binary model's probability is of."""
    from pathlib import Path

    from histoflow.core.pictures import probability_label
    from histoflow.evaluate.plots import _save, _title, plt

    rel = summary.get("reliability") or {}
    if not rel.get("mean_predicted"):
        return None
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8, label="perfectly calibrated")
    label = probability_label(positive) if positive is not None and rel["kind"] == "positive class" else rel["kind"]
    ax.plot(rel["mean_predicted"], rel["observed"], marker="o", label=label)
    ece = summary.get("ece")
    what = "predicted probability" if label == rel["kind"] else label
    ax.set(xlabel=f"mean {what} in the bin", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1.02))
    _title(ax, f"{title} (ECE {ece:.3f})" if ece is not None else title, caption)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, Path(path))


def calibrate_run(run_dir: Path, split: str = "val") -> dict:
    """Fit a temperature on the run's `predictions_<split>.csv`, store it in checkpoints/best.pt."""
    import pandas as pd

    from histoflow.checkpoint import Checkpoint
    from histoflow.core.errors import DataError
    from histoflow.core.io import atomic_write_json

    run_dir = Path(run_dir)
    csv, ckpt = run_dir / f"predictions_{split}.csv", run_dir / "checkpoints" / "best.pt"
    for path in (csv, ckpt):
        if not path.is_file():
            raise DataError(f"{run_dir}: missing {path.relative_to(run_dir)} (train and evaluate the run first)")
    checkpoint = Checkpoint.read(ckpt)
    pred = pd.read_csv(csv)
    names = [f"p_{c}" for c in checkpoint.class_names]
    if any(c not in pred for c in names):
        raise DataError(f"{csv}: expected columns {names}, found {list(pred.columns)}")
    if not pd.api.types.is_integer_dtype(pred["label"]):  # evaluate writes class indices
        raise DataError(f"{csv}: column label should hold class indices, found {pred['label'].dtype}")
    y = pred["label"].to_numpy()
    probs = pred[names].to_numpy()
    # predictions were made with whatever temperature the checkpoint already held: compose them
    previous = checkpoint.temperature or 1.0
    t = fit_temperature(y, probs, source=str(csv))
    checkpoint.with_temperature(previous * t, fitted_on=f"{csv.name} ({len(y)} predictions)")
    summary = {
        "temperature": round(previous * t, 6),
        "fitted_on": csv.name,
        "n": int(len(y)),
        "ece_before": expected_calibration_error(y, probs),
        "ece_after": expected_calibration_error(y, apply_temperature(probs, t)),
        "caveat": f"fitted and measured on the same {split} predictions: the ECE after is optimistic",
    }
    atomic_write_json(run_dir / "calibration.json", summary)
    return summary
