"""PNG plots: ROC, PR, confusion matrix, training curves (matplotlib, no display needed).

Every plot says what it shows: the class a curve is about ("P(class 1)", never "1"), and in its
title the `caption` of the evaluation (split, number of images, test-time augmentation). The
ROC draws the bootstrap band of the confidence intervals metrics.json holds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from histoflow.core.io import atomic_path  # noqa: E402
from histoflow.core.pictures import class_labels, probability_label  # noqa: E402

TTA_VIEWS = 8  # predict.patches averages the 8 dihedral views


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def caption(name: str, tta: bool, n: int | None = None) -> str:
    """What an evaluation was: "val split, 64 images, TTA (mean of 8 views)"."""
    split = name.removesuffix("_tta")
    what = "all images" if split == "data" else f"{split} split"
    count = f", {n} images" if n is not None else ""
    return f"{what}{count}, " + (f"TTA (mean of {TTA_VIEWS} views)" if tta else "no TTA")


def _title(ax, what: str, cap: str) -> None:
    ax.set_title(f"{what}\n{cap}" if cap else what, fontsize=10)


def _curves(y, class_names):
    """(class index, label) of each curve drawn: the positive class of a binary model (index 1),
    else every class against the rest."""
    pairs = [(1, class_names[1])] if len(class_names) == 2 else list(enumerate(class_names))
    y = np.asarray(y)
    for k, name in pairs:
        yk = (y == k).astype(int)
        if 0 < yk.sum() < len(yk):
            yield k, probability_label(name), yk


def roc_plot(y, probs, class_names, path: Path, caption: str = "", ci: dict | None = None) -> Path | None:
    """ROC curve(s); `ci` (metrics.json's `ci` of a binary model): AUC interval in the legend and
    the pointwise bootstrap band around the curve."""
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    drawn = False
    info = ci or {}
    band = info.get("roc_band") if len(class_names) == 2 else None
    for k, label, yk in _curves(y, class_names):
        fpr, tpr, _ = skm.roc_curve(yk, probs[:, k])
        text = f"{label}: AUC {skm.auc(fpr, tpr):.3f}"
        if len(class_names) == 2 and info.get("auc"):
            text += f" ({info['level']:.0%} CI {info['auc'][0]:.3f}-{info['auc'][1]:.3f})"
        (line,) = ax.plot(fpr, tpr, label=text, zorder=3)
        if band:
            ax.fill_between(
                band["fpr"],
                band["tpr_low"],
                band["tpr_high"],
                step="post",
                color=line.get_color(),
                alpha=0.22,
                lw=0,
                label=f"{info['level']:.0%} CI band, bootstrap by {info.get('grouped_by') or 'image'} (n={info['n_boot']})",
            )
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8, label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
    _title(ax, "ROC" if len(class_names) == 2 else "ROC, each class against the rest", caption)
    ax.legend(loc="lower right", fontsize=7.5)
    return _save(fig, path)


def pr_plot(y, probs, class_names, path: Path, caption: str = "") -> Path | None:
    """Precision-recall curve(s), with the precision of calling every image positive (prevalence)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    drawn = False
    for k, label, yk in _curves(y, class_names):
        prec, rec, _ = skm.precision_recall_curve(yk, probs[:, k])
        (line,) = ax.plot(rec, prec, label=f"{label}: AP {skm.average_precision_score(yk, probs[:, k]):.3f}")
        ax.axhline(yk.mean(), ls="--", lw=0.8, color=line.get_color(), alpha=0.7, label=f"prevalence {yk.mean():.2f}")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(-0.01, 1.01), ylim=(0, 1.02))
    _title(ax, "Precision-recall", caption)
    ax.legend(loc="lower left", fontsize=7.5)
    return _save(fig, path)


def confusion_plot(cm, class_names, path: Path, caption: str = "", threshold: float | None = None) -> Path:
    """Counts and row percentages (the share of each true class); `threshold`: the cut on the
    positive class's probability of a binary model."""
    cm = np.asarray(cm)
    labels = class_labels(class_names)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(2.4 + 0.9 * n, 1.8 + 0.8 * n))
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=9,
                color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    ax.set(xticks=range(n), yticks=range(n), xticklabels=labels, yticklabels=labels)
    rule = (
        f"called {labels[1]} when {probability_label(class_names[1])} >= {threshold:g}"
        if threshold is not None and n == 2
        else ""
    )
    ax.set_xlabel("predicted" + (f"\n({rule})" if rule else ""), fontsize=9)
    ax.set_ylabel("true (row % of the class)", fontsize=9)
    _title(ax, "Confusion matrix", caption)
    return _save(fig, path)


LOSSES = {"train_loss": "train loss", "val_loss": "validation loss"}
SCORES = {"val_auc": "validation AUC", "val_acc": "validation accuracy"}


def history_plot(history_csv: Path, path: Path, best_epoch: int | None = None) -> Path | None:
    """Loss and validation metrics per epoch (history.csv's numbering), whole-number epochs,
    and the epoch of the best checkpoint marked."""
    if not Path(history_csv).exists():
        return None
    h = pd.read_csv(history_csv)
    if h.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, columns, title in ((axes[0], LOSSES, "loss"), (axes[1], SCORES, "validation")):
        for col, label in columns.items():
            if col in h:
                ax.plot(h["epoch"], h[col], marker="o", label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        lo, hi = float(h["epoch"].min()), float(h["epoch"].max())
        ax.set_xlim(lo - 0.5, hi + 0.5) if hi - lo < 4 else ax.set_xlim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
        if best_epoch is not None and lo <= best_epoch <= hi:
            ax.axvline(best_epoch, color="grey", ls=":", lw=1.2, label=f"best checkpoint (epoch {best_epoch})")
        ax.legend(fontsize=8)
    n = len(h)
    fig.suptitle(f"Training curves: {n} epoch{'s' if n != 1 else ''}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
