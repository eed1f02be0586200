"""`histoflow embed` (tile embeddings from a frozen backbone) and `histoflow train-mil`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from histoflow.cli.common import (
    batch_size_option,
    config_option,
    console,
    device_option,
    expand_slides,
    model_mpp_option,
    reader_threads_option,
    run_verb,
    set_option,
    slide_mpp_option,
    state,
    verb_config,
)
from histoflow.cli.scale_options import devices_option, engine_option, scale_out, spark_master_option


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed(
        slides: Optional[list[Path]] = typer.Argument(
            None, help="Slide files, DICOM series folders, or folders of them."
        ),
        checkpoint: Path = typer.Option(..., help="Checkpoint whose frozen backbone embeds the tiles."),
        out: Path = typer.Option(..., help="Output folder: <slide_id>/{embeddings.npy, tiles.parquet, embed.json}."),
        config: Optional[Path] = config_option(
            "Embedding config (SlidePredictConfig keys; BagConfig keys with --pcam-bags)"
        ),
        set_: Optional[list[str]] = set_option("batch_size=256"),
        mpp: Optional[float] = model_mpp_option(),
        slide_mpp: Optional[float] = slide_mpp_option(),
        allow_resample: bool = typer.Option(False, help="Upsample slides coarser than --mpp."),
        tiles_dir: Optional[Path] = typer.Option(None, help="Read tiles from this `histoflow tile` run."),
        tissue_threshold: float = typer.Option(0.5, help="Embed tiles with at least this tissue fraction."),
        pcam_bags: Optional[Path] = typer.Option(
            None, help="Instead of slides: build MIL bags from this PCam folder (test data)."
        ),
        bag_size: int = typer.Option(32, help="--pcam-bags: patches per bag."),
        bag_k: int = typer.Option(2, help="--pcam-bags: a bag is positive with at least k tumour patches."),
        patients: int = typer.Option(30, help="--pcam-bags: disjoint patient pools."),
        bags_per_patient: int = typer.Option(10, help="--pcam-bags: bags drawn per patient."),
        seed: int = typer.Option(0, help="--pcam-bags: seed."),
        batch_size: int = batch_size_option(128),
        reader_threads: int = reader_threads_option(),
        device: Optional[str] = device_option(),
        engine: str = engine_option(),
        spark_master: str = spark_master_option(),
        devices: Optional[str] = devices_option(),
    ) -> None:
        """Tile embeddings from a frozen backbone, stored per slide for fast MIL training (resumable)."""
        from histoflow.core.errors import ConfigError

        def work():
            if pcam_bags is not None:
                from histoflow.config.slides import BagConfig
                from histoflow.mil.bags import build_pcam_bags

                bags = verb_config(BagConfig, config, set_, keys={"bag_k": "k"})
                return build_pcam_bags(pcam_bags, out, checkpoint, bags, batch_size=batch_size, workers=reader_threads)
            if not slides:
                raise ConfigError("give slides to embed, or --pcam-bags FOLDER")
            from histoflow.config.slides import SlidePredictConfig
            from histoflow.mil.embed import embed_slides

            cfg = verb_config(SlidePredictConfig, config, set_, keys={"reader_threads": "workers"})
            scale = scale_out(engine, spark_master, devices)
            return embed_slides(checkpoint, expand_slides(slides), out, cfg, progress=not state.quiet, scale=scale)

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
        console.print_json(
            json.dumps({k: metrics[k] for k in ("task", "bags", "patients", "best_epoch", "val", "test")})
        )
