"""`histoflow study STUDY.yaml`: slides + labels -> tiles -> models -> slide-level results.

    OUT/tiles/        histoflow tile output (shards, manifest, per-slide reports and thumbnails)
    OUT/tile_model/   a tile classifier trained on the tiles with their slide's label (a run folder)
    OUT/embeddings/   every tile embedded by the encoder (the tile classifier's backbone by default)
    OUT/mil/          attention MIL trained on those embeddings with slide labels
    OUT/heatmaps/     predict-slide outputs (heatmap, GeoJSON) of the held-out slides
    OUT/evaluation/   slide-level results of both arms on the held-out slides, thumbnails
    OUT/study.json    what each stage did; OUT/report.html

Both arms see the same slides in the same splits: the label CSV's `split` column when it has
one, else the tile classifier's patient-grouped split, which MIL then reuses. Every stage is a
`Stages` step (see stages.py): skipped when done with the same settings, resumed when killed,
redone with what depends on it when a setting changes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from histoflow.config.study import StudyConfig
from histoflow.core.errors import DataError
from histoflow.core.io import atomic_write_json, atomic_write_text
from histoflow.data.manifest import class_order
from histoflow.data.tiles import read_slide_labels
from histoflow.slide.base import slide_id_of
from histoflow.slide.files import expand_slides
from histoflow.tiling.read import PIXELS_VERSION
from histoflow.workflows.study.stages import StageResult, Stages, fingerprint

log = logging.getLogger(__name__)


def resolve_paths(cfg: StudyConfig, base: Path) -> StudyConfig:
    """Paths in a study file are relative to the file."""

    def at(p: str | None) -> str | None:
        return None if p is None else str(base / Path(p).expanduser())

    slides = [cfg.slides] if isinstance(cfg.slides, str) else cfg.slides
    return cfg.model_copy(
        update={
            "slides": [at(s) for s in slides],
            "labels": at(cfg.labels),
            "tile_model": cfg.tile_model.model_copy(update={"recipe": at(cfg.tile_model.recipe)}),
            "mil": cfg.mil.model_copy(update={"encoder": at(cfg.mil.encoder)}),
        }
    )


def study_task(cfg: StudyConfig, labels: pd.DataFrame) -> tuple[str, list[str]]:
    """(task, class names in order): ordinal when the labels are 3+ integers, binary with 2 classes."""
    slide_rows = labels[labels["x"].isna()]
    names = class_order(slide_rows["label"])
    if len(names) < 2:
        raise DataError(f"{cfg.labels}: the slides hold {len(names)} class(es) {names}; a study needs at least 2")
    task = cfg.task
    if task == "auto":
        integers = all(n.lstrip("-").isdigit() for n in names)
        task = "binary" if len(names) == 2 else ("ordinal" if integers else "multiclass")
    if task == "binary" and len(names) != 2:
        raise DataError(f"{cfg.labels}: task binary needs 2 classes, the labels have {names}")
    return task, names


def run_study(cfg: StudyConfig, out: str | Path, quiet: bool = False) -> dict:
    """Run (or finish, or update) the study into `out`; returns study.json's content."""
    out = Path(out).resolve()  # the tile model's config.yaml names the tiles: absolute, as resume needs
    labels = read_slide_labels(cfg.labels)
    task, class_names = study_task(cfg, labels)
    slides = expand_slides(cfg.slides if isinstance(cfg.slides, list) else [cfg.slides])
    if not slides:
        raise DataError(f"{cfg.slides}: no slide files found")
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out)
    labels_sig = fingerprint(labels.to_dict(orient="list"))

    # tiling is asked again each time: it skips complete slides and tiles slides added to the study
    tiles = stages.run(
        "tiles", _tiling_settings(cfg), lambda folder, resume: _tile(cfg, slides, folder, quiet), always=True
    )
    model = stages.run(
        "tile_model",
        {"run": _tile_run_raw(cfg, tiles.folder), "tiles": tiles.signature, "labels": labels_sig},
        lambda folder, resume: _train_tiles(cfg, tiles.folder, folder, resume, quiet),
    )
    checkpoint = model.folder / "checkpoints" / "best.pt"
    held_out = _held_out_slides(model.folder, cfg.evaluation.heatmaps)
    by_id = {slide_id_of(s): s for s in slides}
    stages.run(
        "heatmaps",
        {"model": model.signature, "slides": held_out},
        lambda folder, resume: _heatmaps(
            checkpoint, [by_id[s] for s in held_out if s in by_id], tiles.folder, folder, _scale(cfg)
        ),
    )
    mil: StageResult | None = None
    if cfg.mil.enabled:
        encoder = Path(cfg.mil.encoder) if cfg.mil.encoder else checkpoint
        embedded = stages.run(
            "embeddings",
            {"encoder": model.signature if cfg.mil.encoder is None else str(encoder), "tiles": tiles.signature},
            lambda folder, resume: _embed(
                encoder, tiles.output["complete"], by_id, tiles.folder, folder, quiet, _scale(cfg)
            ),
        )
        mil = stages.run(
            "mil",
            {
                "embeddings": embedded.signature,
                "model": cfg.mil.model.model_dump(),
                "train": cfg.mil.train.model_dump(),
                "splits": model.signature,
                "labels": labels_sig,
                "task": task,
            },
            lambda folder, resume: _train_mil(cfg, task, class_names, labels, model.folder, embedded.folder, folder),
        )
    evaluation = stages.run(
        "evaluation",
        {
            "model": model.signature,
            "mil": None if mil is None else mil.signature,
            "settings": cfg.evaluation.model_dump(),
            "task": task,
            "labels": labels_sig,
        },
        lambda folder, resume: _evaluate(cfg, task, class_names, labels, tiles.folder, model.folder, mil, folder),
    )
    record = {
        "name": cfg.name,
        "notes": _notes(model.folder, tiles.output),
        "task": task,
        "classes": class_names,
        "slides": len(slides),
        "stages": stages.summary(),
        "tiles": tiles.output,
        "evaluation": evaluation.output,
    }
    atomic_write_json(out / "study.json", record)
    from histoflow.workflows.study.report import render_study_report

    atomic_write_text(out / "report.html", render_study_report(out, record))
    return record


def _notes(model_folder: Path, tiles: dict) -> list[str]:
    """What the study left out, said once: failed slides, and the tile model's data notes
    (slides without a label, without tiles, region tiles outside every region)."""
    import json

    notes = [f"{len(tiles['failed'])} slide(s) failed to tile: {', '.join(tiles['failed'])}"] if tiles["failed"] else []
    metrics = model_folder / "metrics.json"
    if metrics.is_file():
        notes += [n for n in json.loads(metrics.read_text()).get("notes") or [] if n not in notes]
    return notes


# -- stages ---------------------------------------------------------------------------------------------
def _tiling_settings(cfg: StudyConfig) -> dict:
    from histoflow.config.tiling import TileConfig

    settings = dict(cfg.tiling.settings)
    if cfg.slide_mpp is not None:
        settings.setdefault("slide_mpp", cfg.slide_mpp)
    tile_cfg = TileConfig(**settings)  # a bad key fails here, before any work
    # the pixels version too: a study tiled by an older histoflow is retiled, and all that follows redone
    return {"tile": tile_cfg.to_dict(), "pixels_version": PIXELS_VERSION}


def _tile(cfg: StudyConfig, slides: list[Path], folder: Path, quiet: bool) -> dict:
    from histoflow.config.tiling import TileConfig
    from histoflow.tiling.extract import extract_tiles

    tile_cfg = TileConfig(**_tiling_settings(cfg)["tile"])
    t = cfg.tiling
    summary = extract_tiles(
        slides,
        folder,
        tile_cfg,
        engine=t.engine,
        workers=t.workers,
        spark_master=t.spark_master if t.engine == "spark" else None,
        progress=not quiet,
    )
    import pyarrow.parquet as pq

    failed = sorted(summary["failed"])
    complete = sorted({slide_id_of(s) for s in slides} - set(failed))
    if not complete:
        raise DataError(f"{folder}: no slide was tiled (failed: {failed})")
    return {"complete": complete, "failed": failed, "tiles": pq.read_metadata(folder / "manifest.parquet").num_rows}


def _tile_run_raw(cfg: StudyConfig, tiles: Path) -> dict:
    """The tile classifier's run config as a dict: the recipe, its overrides, the study's data."""
    from histoflow.config import apply_overrides, read_yaml

    raw = read_yaml(cfg.tile_model.recipe) if cfg.tile_model.recipe else {}
    raw = apply_overrides(raw, cfg.tile_model.set)
    data = dict(raw.get("data") or {})
    data.pop("path", None)  # a patch recipe's data folder: the study's tiles replace it
    data.update({"tiles": str(tiles), "labels": str(cfg.labels)})
    raw.update({"data": data, "name": f"{cfg.name}-tiles"})
    raw.setdefault("seed", cfg.seed)
    return raw


def _train_tiles(cfg: StudyConfig, tiles: Path, folder: Path, resume: bool, quiet: bool) -> dict:
    from histoflow.config import RunConfig, validate
    from histoflow.workflows.run import run

    run_cfg = validate(RunConfig, _tile_run_raw(cfg, tiles), str(cfg.tile_model.recipe or "tile_model"))
    run(run_cfg, folder, resume=resume and (folder / "config.yaml").is_file(), quiet=quiet)
    return {"checkpoint": str(folder / "checkpoints" / "best.pt")}


def _slide_splits(model_folder: Path) -> pd.DataFrame:
    """slide, patient, split of every slide the tile classifier saw (from its splits.csv)."""
    splits = pd.read_csv(model_folder / "splits.csv", usecols=["slide", "patient", "split"], dtype=str)
    return splits.drop_duplicates("slide").reset_index(drop=True)


def _held_out_slides(model_folder: Path, which: str) -> list[str]:
    if which == "none":
        return []
    splits = _slide_splits(model_folder)
    keep = splits if which == "all" else splits[splits["split"] == "test"]
    return sorted(keep["slide"])


def _scale(cfg: StudyConfig):
    """Slide stages run where tiling does: on Spark when the study tiles with Spark, one task per slide."""
    from histoflow.predict.scale import ScaleOut

    t = cfg.tiling
    return ScaleOut(engine="spark", spark_master=t.spark_master) if t.engine == "spark" else None


def _heatmaps(checkpoint: Path, slides: list[Path], tiles: Path, folder: Path, scale=None) -> dict:
    from histoflow.config.slides import SlidePredictConfig
    from histoflow.predict.slide import predict_slides

    if not slides:
        return {"slides": 0}
    cfg = SlidePredictConfig(tiles_dir=str(tiles))
    summary = predict_slides(checkpoint, slides, folder, cfg, progress=False, scale=scale)
    return {"slides": len(slides), "failed": sorted(summary.get("failed", {}))}


def _embed(
    encoder: Path, complete: list[str], by_id: dict[str, Path], tiles: Path, folder: Path, quiet: bool, scale=None
) -> dict:
    from histoflow.config.slides import SlidePredictConfig
    from histoflow.mil.embed import embed_slides

    slides = [by_id[s] for s in complete if s in by_id]
    cfg = SlidePredictConfig(tiles_dir=str(tiles))
    summary = embed_slides(encoder, slides, folder, cfg, progress=not quiet, scale=scale)
    if summary["failed"]:
        log.error("embedding failed for %d slide(s): %s", len(summary["failed"]), sorted(summary["failed"]))
    return {"complete": summary["complete"], "failed": sorted(summary["failed"])}


def _train_mil(
    cfg: StudyConfig,
    task: str,
    class_names: list[str],
    labels: pd.DataFrame,
    model_folder: Path,
    embeddings: Path,
    folder: Path,
) -> dict:
    from histoflow.config.mil import MILConfig, MILData
    from histoflow.mil.train import train_mil

    splits = _slide_splits(model_folder)
    slide_labels = labels[labels["x"].isna()].drop_duplicates("slide").set_index("slide")["label"]
    table = splits.assign(label=splits["slide"].map(slide_labels))
    table = table[table["label"].notna() & table["slide"].map(lambda s: (embeddings / s / "embeddings.npy").is_file())]
    csv_path = folder / "labels.csv"
    atomic_write_text(csv_path, table[["slide", "label", "patient", "split"]].to_csv(index=False))
    mil_cfg = MILConfig(
        data=MILData(
            embeddings=str(embeddings),
            labels=str(csv_path),
            id_column="slide",
            task=task,  # type: ignore[arg-type]  # binary | ordinal | multiclass, checked by study_task
            classes=class_names,
        ),
        model=cfg.mil.model,
        train=cfg.mil.train.model_copy(update={"seed": cfg.seed}),
        out=str(folder),
    )
    metrics = train_mil(mil_cfg, folder)
    return {"bags": metrics.get("bags"), "best_epoch": metrics.get("best_epoch")}


def _evaluate(
    cfg: StudyConfig,
    task: str,
    class_names: list[str],
    labels: pd.DataFrame,
    tiles: Path,
    model_folder: Path,
    mil: StageResult | None,
    folder: Path,
) -> dict[str, Any]:
    from histoflow.workflows.study.evaluation import evaluate_study

    return evaluate_study(cfg, task, class_names, labels, tiles, model_folder, mil, folder)
