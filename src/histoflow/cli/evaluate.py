"""`histoflow evaluate`, `explain`, `report` and `calibrate`: what a checkpoint is worth, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histoflow.cli.common import (
    batch_size_option,
    check_data_alias,
    console,
    data_argument,
    deprecated_data_option,
    device_option,
    run_verb,
    split_option,
)
from histoflow.workflows.display import print_metrics

LABELLED = "Labelled patches: folder, CSV manifest, Kaggle folder or PCam HDF5."


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        data: Path = data_argument(LABELLED),
        checkpoint: Path = typer.Option(..., help="A histoflow checkpoint (best.pt)."),
        split: Optional[str] = split_option(),
        tta: bool = typer.Option(False, help="Average the 8 dihedral views."),
        threshold: float = typer.Option(0.5, help="Decision threshold on the positive-class probability."),
        out: Path = typer.Option(Path("runs/evaluate"), help="Output folder (metrics.json, plots)."),
        size_policy: Optional[str] = typer.Option(
            None,
            help="Images of another size than the training images: resize or pad them (a warning in "
            "metrics.json), or raise (refuse) [default: the training run's data.size_policy].",
        ),
        batch_size: int = batch_size_option(256),
        device: Optional[str] = device_option(),
        data_option: Optional[Path] = deprecated_data_option(),
    ) -> None:
        """Evaluate a checkpoint: metrics.json, ROC/PR/confusion plots."""
        from histoflow.evaluate.run import evaluate_checkpoint

        check_data_alias(data_option, "histoflow evaluate --checkpoint CKPT DATA")
        run_verb(
            evaluate_checkpoint,
            checkpoint,
            data,
            out,
            split=split,
            tta=tta,
            threshold=threshold,
            size_policy=size_policy,
            batch_size=batch_size,
            device=device,
        )
        print_metrics(console, out / "metrics.json")
        console.print(f"wrote {out / 'metrics.json'}")

    @app.command()
    def explain(
        data: Path = data_argument(LABELLED),
        checkpoint: Path = typer.Option(..., help="A histoflow checkpoint (best.pt)."),
        n: int = typer.Option(32, help="Cases in the gallery (a quarter each of TP, FP, FN, TN)."),
        out: Path = typer.Option(Path("runs/explain"), help="Output folder (gallery.png, gallery.csv, cams/)."),
        method: str = typer.Option("gradcam", help="gradcam or gradcam++."),
        split: Optional[str] = split_option(),
        threshold: float = typer.Option(0.5, help="Decision threshold on the positive-class probability."),
        tta: bool = typer.Option(
            False, help="Average the 8 dihedral views: cases picked as `evaluate --tta` scores them, maps averaged."
        ),
        batch_size: int = batch_size_option(64),
        device: Optional[str] = device_option(),
        data_option: Optional[Path] = deprecated_data_option(),
    ) -> None:
        """Grad-CAM gallery of the most confident true/false positives and negatives."""
        from histoflow.evaluate.explain import explain_checkpoint

        check_data_alias(data_option, "histoflow explain --checkpoint CKPT DATA")
        summary = run_verb(
            explain_checkpoint,
            checkpoint,
            data,
            out,
            n=n,
            method=method,
            split=split,
            threshold=threshold,
            tta=tta,
            batch_size=batch_size,
            device=device,
        )
        how = " (TTA: 8-view means)" if tta else ""
        console.print(f"{summary['n']} cases {summary['counts']}{how}; wrote {summary['gallery']}", highlight=False)

    @app.command()
    def report(
        run_dirs: list[Path] = typer.Argument(..., help="One run folder, or several to compare side by side."),
        out: Optional[Path] = typer.Option(
            None, help="HTML file [default: RUN/report.html; for several runs compare_<a>_vs_<b>.html beside them]."
        ),
        gallery_n: int = typer.Option(32, help="Cases in the Grad-CAM gallery (made when the run has none)."),
        no_explain: bool = typer.Option(False, "--no-explain", help="Do not make a missing Grad-CAM gallery."),
    ) -> None:
        """One self-contained report.html (images embedded, no network needed)."""
        from histoflow.workflows.report import build_report

        path = run_verb(build_report, run_dirs, out, gallery_n=gallery_n, explain=not no_explain)
        console.print(f"wrote {path}")

    @app.command()
    def calibrate(
        run_dir: Path = typer.Argument(..., help="A run folder (uses predictions_<split>.csv)."),
        split: str = typer.Option(
            "val", "--split", help="Predictions to fit the temperature on: val (or valid) or test."
        ),
    ) -> None:
        """Temperature scaling: fit on validation predictions, store it in checkpoints/best.pt."""
        from histoflow.data.manifest import SPLIT_ALIASES
        from histoflow.evaluate.calibration import calibrate_run

        split = SPLIT_ALIASES.get(split.lower(), split)

        summary = run_verb(calibrate_run, run_dir, split)
        console.print(
            f"temperature {summary['temperature']}: ECE {summary['ece_before']} -> {summary['ece_after']} "
            f"(on the {split} predictions it was fitted on)",
            highlight=False,
        )
