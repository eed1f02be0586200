"""`histoflow predict-slide`, `histoflow embed` and `histoflow train-mil`: slide-level verbs.

cli.py calls `register(app)`. Exit codes as for `tile`: 0 every slide complete (an empty slide,
no tissue, counts as complete), 1 some slides failed (named, with why), 2 a usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _slide_cfg(**kw):
    from histoflow.config.slides import AggregateConfig, SlidePredictConfig

    agg = AggregateConfig(method=kw.pop("aggregate"), k=kw.pop("top_k"), threshold=kw.pop("threshold"))
    return SlidePredictConfig(aggregate=agg, **kw)


def register(app: typer.Typer) -> None:
    from histoflow.cli import run_verb
    from histoflow.cli_slides import expand_slides

    @app.command("predict-slide")
    def predict_slide(
        slides: list[Path] = typer.Argument(..., help="Slide files or folders of slides."),
        checkpoint: Path = typer.Option(..., help="Patch-model checkpoint (histoflow train)."),
        out: Path = typer.Option(..., help="Output folder: <slide_id>/{tiles.parquet, probabilities.npy, heatmap.png, *.geojson, slide.json}."),
        mpp: Optional[float] = typer.Option(None, help="Microns per pixel the model was trained at (required when the checkpoint does not store it; PCam: 0.972)."),
        slide_mpp: Optional[float] = typer.Option(None, help="Microns per level-0 pixel for slides lacking it."),
        allow_resample: bool = typer.Option(False, help="Upsample slides coarser than the model's mpp (otherwise an error)."),
        aggregate: str = typer.Option("topk_mean", help="Slide score: max, mean, topk_mean or fraction."),
        top_k: int = typer.Option(10, help="Tiles averaged by topk_mean."),
        threshold: float = typer.Option(0.5, help="Probability threshold for `fraction` and the GeoJSON."),
        positive_class: Optional[str] = typer.Option(None, help="Class scored and drawn [default: the last class]."),
        mil_checkpoint: Optional[Path] = typer.Option(None, help="Learned aggregator from train-mil (same backbone checkpoint)."),
        tiles_dir: Optional[Path] = typer.Option(None, help="Read tiles from this `histoflow tile` run instead of the slide."),
        overlap_px: int = typer.Option(0, help="Output pixels shared by neighbouring tiles."),
        tissue_threshold: float = typer.Option(0.5, help="Score tiles with at least this tissue fraction."),
        batch_size: int = typer.Option(64, help="Tiles per model batch."),
        workers: int = typer.Option(2, help="Reader threads decoding tiles ahead of the model (0: no overlap)."),
        tta: bool = typer.Option(False, help="Average over the 8 flips/rotations."),
        backend: str = typer.Option("auto", help="Slide reader: auto, openslide, tifffile or image."),
        device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 [default: cuda when available]."),
    ) -> None:
        """Heatmaps, GeoJSON and slide scores from a patch model (resumable)."""
        from histoflow.mil.apply import predict_slides_with_mil as predict_slides

        def work():
            cfg = _slide_cfg(mpp=mpp, slide_mpp=slide_mpp, allow_resample=allow_resample, aggregate=aggregate,
                             top_k=top_k, threshold=threshold, positive_class=positive_class,
                             mil_checkpoint=str(mil_checkpoint) if mil_checkpoint else None,
                             tiles_dir=str(tiles_dir) if tiles_dir else None, overlap_px=overlap_px,
                             tissue_threshold=tissue_threshold, batch_size=batch_size, workers=workers, tta=tta,
                             backend=backend, device=device)
            return predict_slides(checkpoint, expand_slides(slides), out, cfg)

        summary = run_verb(work)
        table = Table(title=f"slide scores -> {summary['out']} ({summary['tile_px']} px @ {summary['mpp']:g} um/px, {summary['device']})")
        for col in ("slide", "status", "score", "tiles", "skipped", "tiles/s"):
            table.add_column(col)
        for sid, score in summary["scores"].items():
            rep = json.loads((Path(summary["out"]) / sid / "slide.json").read_text())
            table.add_row(sid, rep["status"] + (" (resumed)" if sid in summary["resumed"] else ""),
                          "-" if score is None else f"{score:.4f}", str(rep["tiles"]["scored"]),
                          str(rep["tiles"]["skipped_read_errors"]), str(rep.get("tiles_per_s") or "-"))
        console.print(table)
        for name, err in summary["failed"].items():
            console.print(f"[red]failed[/] {name}: {err}", soft_wrap=True, highlight=False)
        if summary["failed"]:
            raise typer.Exit(1)

    @app.command("embed")
    def embed(
        slides: Optional[list[Path]] = typer.Argument(None, help="Slide files or folders of slides."),
        checkpoint: Path = typer.Option(..., help="Checkpoint whose frozen backbone embeds the tiles."),
        out: Path = typer.Option(..., help="Output folder: <slide_id>/{embeddings.npy, tiles.parquet, embed.json}."),
        mpp: Optional[float] = typer.Option(None, help="Tile microns per pixel (required when the checkpoint lacks it)."),
        slide_mpp: Optional[float] = typer.Option(None, help="Microns per level-0 pixel for slides lacking it."),
        allow_resample: bool = typer.Option(False, help="Upsample slides coarser than --mpp."),
        tiles_dir: Optional[Path] = typer.Option(None, help="Read tiles from this `histoflow tile` run."),
        tissue_threshold: float = typer.Option(0.5, help="Embed tiles with at least this tissue fraction."),
        pcam_bags: Optional[Path] = typer.Option(None, help="Instead of slides: build MIL bags from this PCam folder (test data)."),
        bag_size: int = typer.Option(32, help="--pcam-bags: patches per bag."),
        bag_k: int = typer.Option(2, help="--pcam-bags: a bag is positive with at least k tumour patches."),
        patients: int = typer.Option(30, help="--pcam-bags: disjoint patient pools."),
        bags_per_patient: int = typer.Option(10, help="--pcam-bags: bags drawn per patient."),
        seed: int = typer.Option(0, help="--pcam-bags: seed."),
        batch_size: int = typer.Option(128, help="Tiles per batch."),
        workers: int = typer.Option(2, help="Reader threads."),
        device: Optional[str] = typer.Option(None, help="cpu or cuda [default: cuda when available]."),
    ) -> None:
        """Tile embeddings from a frozen backbone, stored per slide for fast MIL training (resumable)."""
        from histoflow.core.errors import ConfigError

        def work():
            if pcam_bags is not None:
                from histoflow.mil.bags import BagConfig, build_pcam_bags

                return build_pcam_bags(pcam_bags, out, checkpoint, BagConfig(
                    bag_size=bag_size, k=bag_k, patients=patients, bags_per_patient=bags_per_patient, seed=seed),
                    batch_size=batch_size, workers=workers)
            if not slides:
                raise ConfigError("give slides to embed, or --pcam-bags FOLDER")
            from histoflow.mil.embed import embed_slides
            from histoflow.config.slides import SlidePredictConfig

            cfg = SlidePredictConfig(mpp=mpp, slide_mpp=slide_mpp, allow_resample=allow_resample,
                                     tiles_dir=str(tiles_dir) if tiles_dir else None, tissue_threshold=tissue_threshold,
                                     batch_size=batch_size, workers=workers, device=device)
            return embed_slides(checkpoint, expand_slides(slides), out, cfg)

        summary = run_verb(work)
        console.print_json(json.dumps(summary, default=str))
        if summary.get("failed"):
            raise typer.Exit(1)

    @app.command("train-mil")
    def train_mil_cmd(
        config: Optional[Path] = typer.Argument(None, help="MIL config YAML (see configs/mil/pcam_bags.yaml)."),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a key: --set data.task=ordinal."),
        out: Optional[Path] = typer.Option(None, help="Run folder [default: the config's `out`]."),
    ) -> None:
        """Gated attention MIL on stored embeddings with slide labels (binary, multiclass, ordinal)."""
        from histoflow.mil.train import load_mil_config, train_mil

        def work():
            return train_mil(load_mil_config(config, set_), out)

        metrics = run_verb(work)
        console.print_json(json.dumps({k: metrics[k] for k in ("task", "bags", "patients", "best_epoch", "val", "test")}))
