"""`histoflow mitosis windows|evaluate|atypia-cv` and `histoflow detect-mitoses` (docs/mitosis.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from histoflow.cli.common import (
    check_data_alias,
    config_option,
    console,
    data_argument,
    deprecated_data_option,
    device_option,
    expand_slides,
    given_on_command_line,
    run_verb,
    set_option,
    slide_mpp_option,
    state,
    verb_config,
)
from histoflow.cli.scale_options import devices_option, engine_option, scale_out, spark_master_option

mitosis_app = typer.Typer(
    help="Mitotic figures: window datasets from point annotations, detector evaluation, normal vs atypical.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(mitosis_app, name="mitosis")

    @app.command("detect-mitoses")
    def detect_mitoses(
        inputs: list[Path] = typer.Argument(..., help="Whole slides, or image files / folders of images."),
        checkpoint: Path = typer.Option(
            ..., help="Detector checkpoint (detector.pt from `histoflow mitosis evaluate`)."
        ),
        out: Path = typer.Option(
            ..., help="Output folder: detections.csv/.geojson (+ per slide: heatmap, hotspot, score)."
        ),
        kind: str = typer.Option(
            "auto", help="slides, images, or auto (slides when any input is a slide format: svs, ndpi, mrxs...)."
        ),
        mpp: Optional[float] = typer.Option(None, help="Images: microns per pixel [default: the detector's]."),
        slide_mpp: Optional[float] = slide_mpp_option(),
        resample: bool = typer.Option(
            False,
            "--allow-resample",
            "--resample",  # its first name; --allow-resample as in predict-slide and embed, and in the refusal
            help="Resize inputs far from the detector's resolution instead of refusing them.",
        ),
        atypia_checkpoint: Optional[Path] = typer.Option(
            None, help="Normal-vs-atypical checkpoint (histoflow mitosis atypia-cv): adds p_atypical."
        ),
        threshold: Optional[float] = typer.Option(
            None, help="Score threshold [default: the one chosen on validation]."
        ),
        area_mm2: Optional[float] = typer.Option(None, help="Slides: hotspot area [default: 2 mm^2]."),
        tile_px: int = typer.Option(512, help="Slides: tile side at the detector's resolution."),
        tissue_threshold: float = typer.Option(0.5, help="Slides: tiles with at least this tissue fraction."),
        config: Optional[Path] = config_option("Grading config (GradingConfig keys: area_mm2, cuts, heatmap_um)"),
        set_: Optional[list[str]] = set_option("cuts=[10,21]"),
        device: Optional[str] = device_option(),
        engine: str = engine_option(),
        spark_master: str = spark_master_option(),
        devices: Optional[str] = devices_option(),
    ) -> None:
        """Detect mitotic figures: points with scores, QuPath GeoJSON; on slides also the density
        heatmap, the densest `area_mm2` square, its mitotic count and the score 1/2/3."""
        from histoflow.config.mitosis import GradingConfig
        from histoflow.core.errors import ConfigError
        from histoflow.predict.mitosis import MitosisDetector
        from histoflow.predict.patches import default_device

        def work():
            grading = verb_config(GradingConfig, config, set_)
            scale = scale_out(engine, spark_master, devices)
            here = scale.here_device(device) if scale is not None else device
            detector = MitosisDetector.from_checkpoint(checkpoint, device=here or default_device())
            if threshold is not None:
                detector.threshold = threshold
            chosen = kind if kind != "auto" else ("slides" if any(is_slide(p) for p in inputs) else "images")
            if chosen == "images":
                from histoflow.predict.mitosis_outputs import detect_images

                return detect_images(detector, inputs, out, mpp, resample, atypia_checkpoint, quiet=state.quiet)
            if chosen != "slides":
                raise ConfigError(f"--kind must be slides, images or auto, got {kind!r}")
            from histoflow.config.slides import SlidePredictConfig
            from histoflow.predict.mitosis_slide import detect_slides

            tiles = SlidePredictConfig(
                slide_mpp=slide_mpp, allow_resample=resample, tissue_threshold=tissue_threshold, device=device
            )
            return detect_slides(
                detector, expand_slides(inputs), out, tiles, grading, tile_px, not state.quiet, atypia_checkpoint, scale
            )

        summary = run_verb(work)
        console.print(f"{summary['mitoses']} mitoses in {summary.get('images', summary.get('slides'))} inputs "
                      f"(threshold {summary['threshold']:.3f}); {out}", highlight=False)  # fmt: skip
        if summary.get("failed"):
            raise typer.Exit(1)


def is_slide(path: Path) -> bool:
    """A whole-slide format (or a folder holding one, or a DICOM series folder); plain TIFF/PNG/JPEG
    count as images unless --kind slides."""
    from histoflow.slide.dicom import is_dicom_series
    from histoflow.slide.files import WHOLE_SLIDE_ONLY_SUFFIXES

    if path.is_dir():
        return is_dicom_series(path) or any(
            p.suffix.lower() in WHOLE_SLIDE_ONLY_SUFFIXES or (p.is_dir() and is_dicom_series(p)) for p in path.iterdir()
        )
    return path.suffix.lower() in WHOLE_SLIDE_ONLY_SUFFIXES


@mitosis_app.command("windows")
def windows(
    data: Optional[str] = data_argument(
        "AMi-Br folder [default: ${HISTOFLOW_DATA}/ami_br]; not with --points.", required=False
    ),
    config: Optional[Path] = config_option("Window dataset config (MitosisWindowsConfig keys)"),
    out: Path = typer.Option(
        ..., help="Output folder: windows/, windows.csv (a manifest for `histoflow train`), crops.csv, points.csv."
    ),
    points: Optional[str] = typer.Option(
        None,
        help="Your own data instead of AMi-Br: a points CSV (image|file_name|slide,x,y[,label][,mpp]) "
        "or a MIDOG++/COCO JSON.",
    ),
    images: Optional[str] = typer.Option(
        None, help="Folder the points file's image names are relative to [default: the points file's folder]."
    ),
    mpp: Optional[float] = typer.Option(
        None, help="Microns per pixel of images the points file gives none for [default: refuse them]."
    ),
    window_px: Optional[int] = typer.Option(None, help="Window side in pixels [default: 48]."),
    set_: Optional[list[str]] = set_option("candidates.threshold=0.05"),
    data_option: Optional[str] = deprecated_data_option(),
) -> None:
    """Crops (AMi-Br) or whole images with point annotations (--points) -> windows on mitoses, on
    annotated non-mitoses and on other candidate nuclei, split by slide."""
    from histoflow.config.mitosis import MitosisWindowsConfig
    from histoflow.core.errors import ConfigError
    from histoflow.core.paths import expand
    from histoflow.data.mitosis_windows import build_windows

    check_data_alias(data_option, "histoflow mitosis windows [DATA] --out OUT")

    def work():
        cfg = verb_config(MitosisWindowsConfig, config, set_)
        if cfg.points is None:
            from histoflow.data.amibr import read_amibr

            return build_windows(read_amibr(expand(cfg.data)), cfg, out, quiet=state.quiet)
        if given_on_command_line("data"):
            raise ConfigError("give either DATA (an AMi-Br folder) or --points FILE, not both")
        from histoflow.data.point_images import read_point_images

        found = read_point_images(
            expand(cfg.points),
            None if cfg.images is None else expand(cfg.images),
            mpp=cfg.mpp,
            mitosis_labels=cfg.mitosis_labels,
            negative_labels=cfg.negative_labels,
            bbox_format=cfg.bbox_format,
            on_duplicate=cfg.on_duplicate,
            duplicate_px=cfg.duplicate_px,
        )
        return build_windows(found, cfg, out, quiet=state.quiet)

    summary = run_verb(work)
    shown = ("crops", "slides", "windows", "candidates_per_crop", "imposters")
    console.print_json(json.dumps({k: summary[k] for k in shown if k in summary}))


@mitosis_app.command("evaluate")
def evaluate(
    data: Path = data_argument("Output folder of `histoflow mitosis windows` (its val and test crops)."),
    checkpoint: Path = typer.Option(..., help="Mitosis window classifier (runs/.../checkpoints/best.pt)."),
    out: Path = typer.Option(..., help="Output folder: metrics.json, detections_<split>.csv, report/, detector.pt."),
    config: Optional[Path] = config_option("Detection config (DetectConfig keys)"),
    proposals: Optional[str] = typer.Option(
        None, help="candidates (haematoxylin blobs) or grid (dense) [default: candidates]."
    ),
    set_: Optional[list[str]] = set_option("nms_um=4"),
    data_option: Optional[Path] = deprecated_data_option("--windows"),
) -> None:
    """Detection on held-out crops (threshold chosen on val, metrics on test) beside the centre and
    haematoxylin baselines; writes detector.pt for `histoflow detect-mitoses`."""
    from histoflow.config.mitosis import DetectConfig
    from histoflow.evaluate.mitosis import evaluate_detector

    check_data_alias(data_option, "histoflow mitosis evaluate --checkpoint CKPT WINDOWS --out OUT", "--windows")

    def work():
        cfg = verb_config(DetectConfig, config, set_)
        return evaluate_detector(checkpoint, data, out, cfg, quiet=state.quiet)

    results = run_verb(work)
    for name, result in results["methods"].items():
        test = result["test"]
        console.print(
            f"{name:>13}: test F1 {test['f1'] or 0:.3f}  precision {test['precision'] or 0:.3f}  "
            f"recall {test['recall'] or 0:.3f}"
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
