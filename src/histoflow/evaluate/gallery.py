"""What a report shows but a run folder may lack, made before the report is rendered: the
Grad-CAM gallery (from the best checkpoint) and the training curves (from history.csv).

`prepare_report(run_dirs)` reads the run folders, makes the missing pieces and returns the runs,
with a note for every piece it could not make, ready for `evaluate.report.render_report`.
"""

from __future__ import annotations

from pathlib import Path

from histoflow.core.errors import HistoflowError
from histoflow.evaluate.run_folder import Run, load_runs


def prepare_report(run_dirs, gallery_n: int = 32, explain: bool = True) -> list[Run]:
    """The runs of `run_dirs`, each with its training curves and (when `explain`) its gallery."""
    runs = load_runs(run_dirs)
    if explain:
        for run in runs:
            ensure_gallery(run, n=gallery_n)
    for run in runs:
        ensure_training_curves(run)
    return runs


def ensure_training_curves(run: Run) -> Path | None:
    """report/training_curves.png of the run, drawn from history.csv when absent."""
    png = run.path / "report" / "training_curves.png"
    if png.is_file():
        return png
    if run.history is None:
        return None
    from histoflow.evaluate.plots import history_plot

    best = run.metrics.get("epoch")
    return history_plot(run.path / "history.csv", png, best_epoch=best if isinstance(best, int) else None)


def ensure_gallery(run: Run, n: int = 32, method: str = "gradcam") -> Path | None:
    """explain/gallery.png of the run, made from checkpoints/best.pt on the val (else test) split."""
    gallery = run.path / "explain" / "gallery.png"
    if gallery.is_file():
        return gallery
    ckpt = run.path / "checkpoints" / "best.pt"
    if not ckpt.is_file() or run.splits is None:
        run.missing.append("explain/gallery.png (and no checkpoint + splits.csv to make it)")
        return None
    split = next((s for s in ("val", "test") if (run.splits["split"] == s).any()), None)
    if split is None:
        run.notes.append("no val/test rows in splits.csv: no Grad-CAM gallery")
        return None
    try:
        explain_run(run.path, ckpt, split, n=n, method=method)
    except (HistoflowError, ImportError) as exc:
        run.notes.append(f"Grad-CAM gallery not made: {exc}")
        return None
    return gallery


def explain_run(run_dir: Path, checkpoint: Path, split: str, n: int = 32, method: str = "gradcam") -> dict:
    from histoflow.checkpoint import load_checkpoint
    from histoflow.data.datasets import dataset_for_checkpoint
    from histoflow.data.manifest import read_manifest
    from histoflow.evaluate.gradcam import explain_gallery

    model, ckpt = load_checkpoint(checkpoint)
    manifest = read_manifest(run_dir / "splits.csv", format="csv").split(split)
    dataset = dataset_for_checkpoint(manifest, ckpt)
    return explain_gallery(model, ckpt, dataset, run_dir / "explain", n=n, method=method, caption=f"{split} split")
