"""Evaluation pictures say what they show (issue 20): titles name the split and TTA, classes
read "P(class 1)", the ROC draws its bootstrap band, a 1-epoch history has a sensible x-axis
and marks the best epoch, the Grad-CAM gallery has no blank band and readable file names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection

from histoflow.checkpoint import save_checkpoint
from histoflow.config import ModelConfig
from histoflow.evaluate import plots
from histoflow.evaluate.operating import ROC_GRID, bootstrap_ci
from histoflow.models.factory import create_model
from tests.helpers import class_folder_dataset


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plots save, kept open for inspection: {file name: figure}."""
    kept: dict = {}

    def keep(fig, path):
        kept[path.name] = fig
        fig.canvas.draw()
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    for fig in kept.values():
        plots.plt.close(fig)


def _scores(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    return y, np.stack([1 - p, p], 1)


def test_roc_band_comes_from_the_bootstrap_and_holds_the_curve():
    from sklearn import metrics as skm

    y, probs = _scores()
    ci = bootstrap_ci(y, probs[:, 1], {}, n_boot=200, seed=0)
    band = ci["roc_band"]
    lo, hi = np.array(band["tpr_low"]), np.array(band["tpr_high"])
    assert len(band["fpr"]) == ROC_GRID and (lo <= hi).all() and (np.diff(lo) >= 0).all()
    fpr, tpr, _ = skm.roc_curve(y, probs[:, 1])
    curve = tpr[np.searchsorted(fpr, band["fpr"], side="right") - 1]
    assert ((lo <= curve + 1e-9) & (curve <= hi + 1e-9)).mean() > 0.9


def test_roc_draws_the_ci_band_and_names_the_evaluation(tmp_path, figures):
    y, probs = _scores()
    ci = bootstrap_ci(y, probs[:, 1], {}, n_boot=200, seed=0)
    cap = plots.caption("val_tta", True, len(y))
    assert cap == "val split, 300 images, TTA (mean of 8 views)"
    plots.roc_plot(y, probs, ["0", "1"], tmp_path / "roc.png", cap, ci=ci)
    ax = figures["roc.png"].axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1 and "95% CI band" in bands[0].get_label()
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(min(ci["roc_band"]["tpr_low"])) and ys.max() == pytest.approx(1.0)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith("P(class 1): AUC") and "95% CI" in legend[0]
    assert "val split" in ax.get_title() and "TTA" in ax.get_title()


def test_one_epoch_history_has_a_sensible_axis_and_marks_the_best_epoch(tmp_path, figures):
    csv = tmp_path / "history.csv"
    csv.write_text("epoch,train_loss,val_loss,val_auc,val_acc\n0,0.69,0.68,0.7,0.5\n")
    plots.history_plot(csv, tmp_path / "curves.png", best_epoch=0)
    for ax in figures["curves.png"].axes:
        assert ax.get_xlim() == pytest.approx((-0.5, 0.5))
        assert [t for t in ax.get_xticks() if -0.5 <= t <= 0.5] == [0]
        assert any("best checkpoint (epoch 0)" == line.get_label() for line in ax.get_lines())


def test_gallery_has_no_blank_band_and_readable_file_names(tmp_path, figures):
    pytest.importorskip("pytorch_grad_cam")
    from histoflow.evaluate.gradcam import CATEGORIES, GalleryItem, gallery_plot

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 48, 48, 3), dtype=np.uint8)
    cams = rng.random((16, 48, 48)).astype(np.float32)
    items = [
        GalleryItem(CATEGORIES[k // 8], k, f"/data/pcam/valid/1/patch00{k:05d}.jpg", "1", "1", 0.9) for k in range(16)
    ]
    gallery_plot(images, cams, items, tmp_path / "gallery.png", "gradcam", positive_class="1", caption="val split")
    fig = figures["gallery.png"]
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle
    assert "val split" in title.get_text() and "no false negative, no true negative" in title.get_text()
    titles = [t for ax in fig.axes for t in (ax.title, ax._left_title) if t.get_text()]
    top = max(t.get_window_extent(renderer).y1 for t in titles)
    assert title.get_window_extent(renderer).y0 - top < 20  # pixels between the title and the first row
    names = [t for t in titles if t.get_text().endswith(".jpg")]
    assert len(names) == 16 and min(t.get_fontsize() for t in names) >= 7
    assert all(t.get_window_extent(renderer).height >= 10 for t in names)  # px tall at 100 dpi (saved at 110)
    assert any("P(class 1) 0.900" in t.get_text() for t in titles)


def test_evaluate_names_split_tta_and_classes_in_every_plot(tmp_path, figures, monkeypatch):
    from histoflow.evaluate.run import evaluate_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(name="simple_cnn", params={"widths": [8, 16], "depth": 1})
    ckpt = save_checkpoint(
        tmp_path / "m.pt", create_model(cfg, 2), model_config=cfg.model_dump(), class_names=["0", "1"], image_px=32
    )
    data = class_folder_dataset(tmp_path / "data", n_per_class=8)
    evaluate_checkpoint(ckpt, data, tmp_path / "out", tta=True, batch_size=8)
    assert set(figures) == {f"{k}_data.png" for k in ("roc", "pr", "confusion", "calibration")}
    for name, fig in figures.items():
        title = fig.axes[0].get_title()
        assert "all images, 16 images, TTA (mean of 8 views)" in title, (name, title)
    confusion = figures["confusion_data.png"].axes[0]
    assert [t.get_text() for t in confusion.get_xticklabels()] == ["class 0", "class 1"]
    assert "P(class 1) >= 0.5" in confusion.get_xlabel()
    assert any(isinstance(c, PolyCollection) for c in figures["roc_data.png"].axes[0].collections)
