"""`histoflow mitosis windows|evaluate|atypia-cv` and `histoflow detect-mitoses` (docs/mitosis.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from histoflow.cli.common import config_option, console, run_verb, set_option, state, verb_config

mitosis_app = typer.Typer(
    help="Mitotic figures: window datasets from point annotations, detector evaluation, normal vs atypical.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(mitosis_app, name="mitosis")

    @app.command("detect-mitoses")
    def detect_mitoses(
        inputs: list[Path] = typer.Argument(..., help="Image files or folders of images."),
        checkpoint: Path = typer.Option(
            ..., help="Detector checkpoint (detector.pt from `histoflow mitosis evaluate`)."
        ),
        out: Path = typer.Option(..., help="Output folder: detections.csv, detections.geojson, summary.json."),
        mpp: Optional[float] = typer.Option(None, help="Microns per pixel of the images [default: the detector's]."),
        resample: bool = typer.Option(
            False, help="Resize images far from the detector's resolution instead of refusing them."
        ),
        atypia_checkpoint: Optional[Path] = typer.Option(None, help="Normal-vs-atypical checkpoint: adds p_atypical."),
        threshold: Optional[float] = typer.Option(
            None, help="Score threshold [default: the one chosen on validation]."
        ),
        device: Optional[str] = typer.Option(None, help="cpu or cuda [default: cuda when available]."),
    ) -> None:
        """Detect mitotic figures in images: points with scores, QuPath GeoJSON, counts per mm^2."""
        from histoflow.predict.mitosis import MitosisDetector
        from histoflow.predict.mitosis_outputs import detect_images
        from histoflow.predict.patches import default_device

        def work():
            detector = MitosisDetector.from_checkpoint(checkpoint, device=device or default_device())
            if threshold is not None:
                detector.threshold = threshold
            return detect_images(detector, inputs, out, mpp, resample, atypia_checkpoint, quiet=state.quiet)

        summary = run_verb(work)
        console.print(
            f"{summary['mitoses']} mitoses in {summary['images']} images (threshold {summary['threshold']:.3f}); "
            f"{out / 'detections.csv'}",
            highlight=False,
        )


@mitosis_app.command("windows")
def windows(
    config: Optional[Path] = config_option("Window dataset config (MitosisWindowsConfig keys)"),
    out: Path = typer.Option(
        ..., help="Output folder: windows/, windows.csv (a manifest for `histoflow train`), crops.csv, points.csv."
    ),
    data: Optional[str] = typer.Option(None, help="AMi-Br folder [default: ${HISTOFLOW_DATA}/ami_br]."),
    window_px: Optional[int] = typer.Option(None, help="Window side in pixels [default: 48]."),
    set_: Optional[list[str]] = set_option("candidates.threshold=0.05"),
) -> None:
    """AMi-Br crops -> windows on mitoses and on other candidate nuclei, split by slide."""
    from histoflow.config.mitosis import MitosisWindowsConfig
    from histoflow.core.paths import expand
    from histoflow.data.amibr import read_amibr
    from histoflow.data.mitosis_windows import build_windows

    def work():
        cfg = verb_config(MitosisWindowsConfig, config, set_)
        return build_windows(read_amibr(expand(cfg.data)), cfg, out, quiet=state.quiet)

    summary = run_verb(work)
    console.print_json(json.dumps({k: summary[k] for k in ("crops", "slides", "windows", "candidates_per_crop")}))


@mitosis_app.command("evaluate")
def evaluate(
    checkpoint: Path = typer.Option(..., help="Mitosis window classifier (runs/.../checkpoints/best.pt)."),
    windows: Path = typer.Option(..., help="Output folder of `histoflow mitosis windows` (its val and test crops)."),
    out: Path = typer.Option(..., help="Output folder: metrics.json, detections_<split>.csv, report/, detector.pt."),
    config: Optional[Path] = config_option("Detection config (DetectConfig keys)"),
    proposals: Optional[str] = typer.Option(
        None, help="candidates (haematoxylin blobs) or grid (dense) [default: candidates]."
    ),
    set_: Optional[list[str]] = set_option("nms_um=4"),
) -> None:
    """Detection on held-out crops (threshold chosen on val, metrics on test) beside the centre and
    haematoxylin baselines; writes detector.pt for `histoflow detect-mitoses`."""
    from histoflow.config.mitosis import DetectConfig
    from histoflow.evaluate.mitosis import evaluate_detector

    def work():
        cfg = verb_config(DetectConfig, config, set_)
        return evaluate_detector(checkpoint, windows, out, cfg, quiet=state.quiet)

    results = run_verb(work)
    for name, result in results["methods"].items():
        test = result["test"]
        console.print(
            f"{name:>13}: test F1 {test['f1']:.3f}  precision {test['precision'] or 0:.3f}  recall {test['recall']:.3f}"
            f"  AP {test['ap'] or 0:.3f}  (threshold {result['threshold']:.3f} from val)",
            highlight=False,
        )
    console.print(f"detector: {results['detector']}", highlight=False)


@mitosis_app.command("atypia-cv")
def atypia_cv(
    config: Optional[Path] = config_option("Cross-validation config (AtypiaCVConfig keys)"),
    out: Path = typer.Option(..., help="Output folder: fold<k>/ run folders, oof.csv, cv.json."),
    folds: Optional[int] = typer.Option(None, help="Number of slide-grouped folds [default: 5]."),
    set_: Optional[list[str]] = set_option("run=configs/mitosis/atypia_cnn.yaml"),
) -> None:
    """Normal vs atypical mitotic figures on AMi-Br: slide-grouped k-fold CV, balanced accuracy and AUC with CIs."""
    from histoflow.config.mitosis import AtypiaCVConfig
    from histoflow.workflows.mitosis_atypia import atypia_cv as run_cv

    def work():
        return run_cv(verb_config(AtypiaCVConfig, config, set_), out, quiet=state.quiet)

    summary = run_verb(work)
    pooled, ci = summary["pooled"], summary["ci95"]
    console.print(
        f"out-of-fold ({summary['crops']} crops, {summary['slides']} slides): "
        f"balanced accuracy {pooled['balanced_accuracy']:.3f} [{ci['balanced_accuracy'][0]:.3f}, {ci['balanced_accuracy'][1]:.3f}], "
        f"AUC {pooled['auc']:.3f} [{ci['auc'][0]:.3f}, {ci['auc'][1]:.3f}]",
        highlight=False,
    )
