"""`histoflow explain`, `histoflow report` and `histoflow calibrate` (registered on the main app)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

log = logging.getLogger(__name__)


def explain_checkpoint(checkpoint: Path, data: Path, out: Path, n: int = 32, method: str = "gradcam",
                       split: Optional[str] = None, threshold: float = 0.5, format: str = "auto") -> dict:
    """Grad-CAM gallery of a checkpoint on labelled data: out/gallery.png, gallery.csv, cams/."""
    from histoflow.checkpoint import load_checkpoint
    from histoflow.evaluate.gradcam import explain_gallery
    from histoflow.evaluate.run import dataset_for_checkpoint, labelled_manifest

    model, meta = load_checkpoint(checkpoint)
    manifest = labelled_manifest(data, format, split,
                                 unlabelled_hint="the gallery sorts cases into TP/FP/FN/TN and needs labels")
    dataset = dataset_for_checkpoint(manifest, meta)
    return explain_gallery(model, meta, dataset, out, n=n, method=method, threshold=threshold)


def calibrate_run(run_dir: Path, split: str = "val") -> dict:
    """Fit a temperature on the run's `predictions_<split>.csv`, store it in checkpoints/best.pt."""
    import pandas as pd

    from histoflow.checkpoint import read_checkpoint, store_temperature
    from histoflow.core.errors import DataError
    from histoflow.evaluate.calibration import apply_temperature, expected_calibration_error, fit_temperature
    from histoflow.evaluate.run import write_json

    run_dir = Path(run_dir)
    csv, ckpt = run_dir / f"predictions_{split}.csv", run_dir / "checkpoints" / "best.pt"
    for path in (csv, ckpt):
        if not path.is_file():
            raise DataError(f"{run_dir}: missing {path.relative_to(run_dir)} (train and evaluate the run first)")
    blob = read_checkpoint(ckpt)
    pred = pd.read_csv(csv)
    names = [f"p_{c}" for c in blob["class_names"]]
    if any(c not in pred for c in names):
        raise DataError(f"{csv}: expected columns {names}, found {list(pred.columns)}")
    if not pd.api.types.is_integer_dtype(pred["label"]):  # evaluate writes class indices
        raise DataError(f"{csv}: column label should hold class indices, found {pred['label'].dtype}")
    y = pred["label"].to_numpy()
    probs = pred[names].to_numpy()
    # predictions were made with whatever temperature the checkpoint already held: compose them
    previous = float(blob.get("temperature") or 1.0)
    t = fit_temperature(y, probs, source=str(csv))
    store_temperature(ckpt, previous * t, fitted_on=f"{csv.name} ({len(y)} predictions)")
    summary = {"temperature": round(previous * t, 6), "fitted_on": csv.name, "n": int(len(y)),
               "ece_before": expected_calibration_error(y, probs),
               "ece_after": expected_calibration_error(y, apply_temperature(probs, t)),
               "caveat": f"fitted and measured on the same {split} predictions: the ECE after is optimistic"}
    write_json(run_dir / "calibration.json", summary)
    return summary


def register(app: typer.Typer) -> None:
    from histoflow.cli import console, run_verb

    @app.command()
    def explain(
        checkpoint: Path = typer.Option(..., help="A histoflow checkpoint (best.pt)."),
        data: Path = typer.Option(..., help="Labelled patches: folder, CSV manifest, Kaggle folder or PCam HDF5."),
        n: int = typer.Option(32, help="Cases in the gallery (a quarter each of TP, FP, FN, TN)."),
        out: Path = typer.Option(Path("runs/explain"), help="Output folder (gallery.png, gallery.csv, cams/)."),
        method: str = typer.Option("gradcam", help="gradcam or gradcam++."),
        split: Optional[str] = typer.Option(None, help="Only this split of the data (train/val/test)."),
        threshold: float = typer.Option(0.5, help="Decision threshold on the positive-class probability."),
    ) -> None:
        """Grad-CAM gallery of the most confident true/false positives and negatives."""
        summary = run_verb(explain_checkpoint, checkpoint, data, out, n=n, method=method, split=split,
                           threshold=threshold)
        console.print(f"{summary['n']} cases {summary['counts']}; wrote {summary['gallery']}", highlight=False)

    @app.command()
    def report(
        run_dirs: list[Path] = typer.Argument(..., help="One run folder, or several to compare side by side."),
        out: Optional[Path] = typer.Option(None, help="HTML file [default: RUN/report.html; for several runs "
                                                       "compare_<a>_vs_<b>.html beside them]."),
        gallery_n: int = typer.Option(32, help="Cases in the Grad-CAM gallery (made when the run has none)."),
        no_explain: bool = typer.Option(False, "--no-explain", help="Do not make a missing Grad-CAM gallery."),
    ) -> None:
        """One self-contained report.html (images embedded, no network needed)."""
        from histoflow.evaluate.report import build_report

        path = run_verb(build_report, run_dirs, out, gallery_n=gallery_n, explain=not no_explain)
        console.print(f"wrote {path}")

    @app.command()
    def calibrate(
        run_dir: Path = typer.Argument(..., help="A run folder (uses predictions_<split>.csv)."),
        split: str = typer.Option("val", help="Predictions to fit the temperature on."),
    ) -> None:
        """Temperature scaling: fit on validation predictions, store it in checkpoints/best.pt."""
        summary = run_verb(calibrate_run, run_dir, split)
        console.print(f"temperature {summary['temperature']}: ECE {summary['ece_before']} -> {summary['ece_after']} "
                      f"(on the {split} predictions it was fitted on)", highlight=False)
