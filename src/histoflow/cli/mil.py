"""`histoflow embed` (tile embeddings from a frozen backbone or an encoder), `train-mil`, `predict-mil`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, cast

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
        checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint whose frozen backbone embeds the tiles."),
        encoder: Optional[str] = typer.Option(
            None, help="Instead of --checkpoint: a registered encoder (uni, virchow2, ...; docs/encoders.md)."
        ),
        weights: Optional[str] = typer.Option(
            None,
            help="--encoder's weights: a file or HF download folder [default: $HISTOFLOW_WEIGHTS/<encoder>/]; "
            "'hub' downloads (online), 'random' for tests.",
        ),
        tile_px: Optional[int] = typer.Option(
            None, help="--encoder: tile side in pixels [default: the encoder's own]."
        ),
        resolution_policy: str = typer.Option(
            "warn", help="--encoder: tiles of a size or mpp it was not trained on: warn or refuse."
        ),
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
        reader_threads: Optional[int] = reader_threads_option(),
        device: Optional[str] = device_option(),
        engine: str = engine_option(),
        spark_master: str = spark_master_option(),
        devices: Optional[str] = devices_option(),
    ) -> None:
        """Tile embeddings from a frozen backbone, stored per slide for fast MIL training (resumable)."""
        from histoflow.core.errors import ConfigError

        def work():
            if (checkpoint is None) == (encoder is None):
                raise ConfigError("give either --checkpoint or --encoder (exactly one)")
            if encoder is None and (weights or tile_px):
                raise ConfigError("--weights and --tile-px go with --encoder")
            if pcam_bags is not None:
                if checkpoint is None:
                    raise ConfigError("--pcam-bags embeds with --checkpoint only")
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
            if encoder is not None:
                from histoflow.mil.embed import encoder_embedder

                here = cfg.model_copy(update={"device": scale.here_device(cfg.device)}) if scale else cfg
                emb = encoder_embedder(encoder, weights, here, tile_px=tile_px, resolution_policy=resolution_policy)
                return embed_slides(emb, expand_slides(slides), out, cfg, progress=not state.quiet, scale=scale)
            return embed_slides(
                cast(Path, checkpoint), expand_slides(slides), out, cfg, progress=not state.quiet, scale=scale
            )

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

    @app.command("predict-mil")
    def predict_mil_cmd(
        embeddings: Path = typer.Argument(..., help="An `histoflow embed` output folder (<slide_id>/embeddings.npy)."),
        mil_checkpoint: Path = typer.Option(..., help="A MIL model (mil.pt from `histoflow train-mil`)."),
        out: Path = typer.Option(..., help="Output folder: predictions.csv, <slide_id>/attention.parquet."),
    ) -> None:
        """Slide scores from stored embeddings (a checkpoint's or a foundation encoder's) with a trained MIL model."""
        from histoflow.mil.predict_bags import predict_mil

        summary = run_verb(predict_mil, mil_checkpoint, embeddings, out)
        console.print(
            f"{summary['slides']} slides scored ({len(summary['no_tiles'])} without tiles); wrote {out / 'predictions.csv'}",
            highlight=False,
        )
