"""PNG plots: ROC, PR, confusion matrix, training curves (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from histoflow.core.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _positive(class_names) -> str:
    """' (positive: tumour)' for binary models, whose curves are about class index 1."""
    return f" (positive: {class_names[1]})" if len(class_names) == 2 else ""


def roc_plot(y, probs, class_names, path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    drawn = False
    for k, name in [(1, class_names[1])] if len(class_names) == 2 else enumerate(class_names):
        yk = (np.asarray(y) == k).astype(int)
        if 0 < yk.sum() < len(yk):
            fpr, tpr, _ = skm.roc_curve(yk, probs[:, k])
            ax.plot(fpr, tpr, label=f"{name} (AUC {skm.auc(fpr, tpr):.3f})")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC" + _positive(class_names))
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def pr_plot(y, probs, class_names, path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    drawn = False
    for k, name in [(1, class_names[1])] if len(class_names) == 2 else enumerate(class_names):
        yk = (np.asarray(y) == k).astype(int)
        if 0 < yk.sum() < len(yk):
            prec, rec, _ = skm.precision_recall_curve(yk, probs[:, k])
            ax.plot(rec, prec, label=f"{name} (AP {skm.average_precision_score(yk, probs[:, k]):.3f})")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall" + _positive(class_names), ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def confusion_plot(cm, class_names, path: Path) -> Path:
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(class_names), 1 + 0.8 * len(class_names)))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set(
        xticks=range(len(class_names)),
        yticks=range(len(class_names)),
        xticklabels=class_names,
        yticklabels=class_names,
        xlabel="predicted",
        ylabel="true",
        title="Confusion matrix",
    )
    return _save(fig, path)


def history_plot(history_csv: Path, path: Path) -> Path | None:
    if not Path(history_csv).exists():
        return None
    h = pd.read_csv(history_csv)
    if h.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for col in ("train_loss", "val_loss"):
        if col in h:
            axes[0].plot(h["epoch"], h[col], marker="o", label=col)
    for col in ("val_auc", "val_acc"):
        if col in h:
            axes[1].plot(h["epoch"], h[col], marker="o", label=col)
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].set(title="validation", xlabel="epoch")
    for ax in axes:
        ax.legend(fontsize=8)
    return _save(fig, path)
