"""`histoflow predict` (patches) and `histoflow predict-slide` (whole slides).

Exit codes as for `tile`: 0 every slide complete (an empty slide, no tissue, counts as
complete), 1 some slides failed (named, with why), 2 a usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from histoflow.cli.common import (
    batch_size_option,
    check_data_alias,
    config_option,
    console,
    data_argument,
    deprecated_data_option,
    device_option,
    expand_slides,
    model_mpp_option,
    reader_threads_option,
    record_command,
    run_verb,
    set_option,
    slide_mpp_option,
    state,
    verb_config,
)
from histoflow.cli.scale_options import devices_option, engine_option, scale_out, spark_master_option


def register(app: typer.Typer) -> None:
    @app.command()
    def predict(
        data: Path = data_argument("Images: a bare folder, a class-folder dataset, a CSV or Kaggle folder."),
        checkpoint: Path = typer.Option(..., help="A histoflow checkpoint (best.pt)."),
        out: Path = typer.Option(Path("predictions.csv"), help="CSV with one row per image."),
        tta: bool = typer.Option(False, help="Average the 8 dihedral views."),
        threshold: float = typer.Option(0.5, help="Decision threshold on the positive-class probability."),
        size_policy: Optional[str] = typer.Option(
            None,
            help="Images of another size than the training images: resize or pad them (with a warning), "
            "or raise (refuse) [default: the training run's data.size_policy].",
        ),
        batch_size: int = batch_size_option(256),
        device: Optional[str] = device_option(),
        data_option: Optional[Path] = deprecated_data_option(),
    ) -> None:
        """Class probabilities and predicted label for every image."""
        from histoflow.predict.folder import predict_to_csv

        check_data_alias(data_option, "histoflow predict --checkpoint CKPT DATA")
        frame = run_verb(
            predict_to_csv,
            checkpoint,
            data,
            out,
            tta=tta,
            threshold=threshold,
            size_policy=size_policy,
            quiet=state.quiet,
            batch_size=batch_size,
            device=device,
        )
        notes = frame.attrs.get("notes") or []
        if notes or frame.attrs.get("positive_class"):  # kept beside the CSV, in <name>.command.yaml
            record_command({"positive_class": frame.attrs.get("positive_class"), "notes": notes})
        for note in notes:
            console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
        positive = frame.attrs.get("positive_class")
        console.print(
            f"wrote {len(frame)} predictions to {out}"
            + (f" (threshold {threshold:g} on p_{positive})" if positive else ""),
            highlight=False,
        )

    @app.command("predict-slide")
    def predict_slide(
        slides: list[Path] = typer.Argument(..., help="Slide files, DICOM series folders, or folders of them."),
        checkpoint: Path = typer.Option(..., help="Patch-model checkpoint (histoflow train)."),
        out: Path = typer.Option(
            ...,
            help="Output folder: <slide_id>/{tiles.parquet, probabilities.npy, heatmap.png, *.geojson, slide.json}.",
        ),
        config: Optional[Path] = config_option("Slide prediction config (the keys of SlidePredictConfig)"),
        set_: Optional[list[str]] = set_option("aggregate.k=20"),
        mpp: Optional[float] = model_mpp_option(),
        slide_mpp: Optional[float] = slide_mpp_option(),
        allow_resample: bool = typer.Option(
            False, help="Upsample slides coarser than the model's mpp (otherwise an error)."
        ),
        aggregate: str = typer.Option("topk_mean", help="Slide score: max, mean, topk_mean or fraction."),
        top_k: int = typer.Option(10, help="Tiles averaged by topk_mean."),
        threshold: float = typer.Option(0.5, help="Probability threshold for `fraction` and the GeoJSON."),
        positive_class: Optional[str] = typer.Option(
            None, help="Class scored and drawn [default: the checkpoint's positive class; multi-class: the last]."
        ),
        mil_checkpoint: Optional[Path] = typer.Option(
            None, help="Learned aggregator from train-mil (same backbone checkpoint)."
        ),
        tiles_dir: Optional[Path] = typer.Option(
            None, help="Read tiles from this `histoflow tile` run instead of the slide."
        ),
        overlap_px: int = typer.Option(0, help="Output pixels shared by neighbouring tiles."),
        tissue_threshold: float = typer.Option(0.5, help="Score tiles with at least this tissue fraction."),
        batch_size: int = batch_size_option(64),
        reader_threads: Optional[int] = reader_threads_option(),
        tta: bool = typer.Option(False, help="Average over the 8 flips/rotations."),
        backend: str = typer.Option("auto", help="Slide reader: auto, openslide, tifffile or image."),
        device: Optional[str] = device_option(),
        engine: str = engine_option(),
        spark_master: str = spark_master_option(),
        devices: Optional[str] = devices_option(),
    ) -> None:
        """Heatmaps, GeoJSON and slide scores from a patch model (resumable)."""
        from histoflow.config.slides import SlidePredictConfig
        from histoflow.mil.apply import predict_slides_with_mil as predict_slides

        def work():
            cfg = verb_config(
                SlidePredictConfig,
                config,
                set_,
                keys={
                    "aggregate": "aggregate.method",
                    "top_k": "aggregate.k",
                    "threshold": "aggregate.threshold",
                    "reader_threads": "workers",
                },
            )
            scale = scale_out(engine, spark_master, devices)
            return predict_slides(checkpoint, expand_slides(slides), out, cfg, progress=not state.quiet, scale=scale)

        summary = run_verb(work)
        from histoflow.core.pictures import probability_label

        table = Table(
            title=f"slide scores -> {summary['out']} ({summary['tile_px']} px @ {summary['mpp']:g} um/px, {summary['device']})"
        )
        for col in (
            "slide",
            "status",
            f"score of {probability_label(summary['positive_class'])}",
            "tiles",
            "skipped",
            "tiles/s",
        ):
            table.add_column(col)
        for sid, score in summary["scores"].items():
            rep = json.loads((Path(summary["out"]) / sid / "slide.json").read_text())
            table.add_row(
                sid,
                rep["status"] + (" (resumed)" if sid in summary["resumed"] else ""),
                "-" if score is None else f"{score:.4f}",
                str(rep["tiles"]["scored"]),
                str(rep["tiles"]["skipped_read_errors"]),
                str(rep.get("tiles_per_s") or "-"),
            )
        console.print(table)
        for name, err in summary["failed"].items():
            console.print(f"[red]failed[/] {name}: {err}", soft_wrap=True, highlight=False)
        if summary["failed"]:
            raise typer.Exit(1)
