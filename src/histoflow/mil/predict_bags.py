"""A trained attention-MIL model applied to stored embeddings (`histoflow predict-mil`).

    OUT/predictions.csv           slide, tiles, score, prediction, p_<class>... (one row per slide)
    OUT/<slide_id>/attention.parquet   tile_id, x, y, attention (tiles.parquet's rows, in order)
    OUT/summary.json              the MIL model, what embedded the slides, slides done and skipped

This is how slides embedded by a foundation encoder (`histoflow embed --encoder`) get a slide
score: predict-slide takes its tile features from a patch checkpoint, so it can only apply MIL
models trained on that checkpoint's embeddings. Here the embeddings already exist; each slide's
embed.json must name the same encoder and weights (or checkpoint), tile size and mpp as the
embeddings the MIL model was trained on.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.core.errors import CheckpointError, DataError
from histoflow.core.io import atomic_path, atomic_write_json
from histoflow.mil.model import load_mil, predict_bag
from histoflow.mil.train import describe_embedding, embedding_identity

log = logging.getLogger(__name__)


def embedded_slides(embeddings: Path) -> list[tuple[Path, dict]]:
    """(slide folder, its embed.json) of an `histoflow embed` output, for finished slides only."""
    if not embeddings.is_dir():
        raise DataError(f"{embeddings}: embeddings folder not found (run `histoflow embed` first)")
    found = []
    for d in sorted(p for p in embeddings.iterdir() if p.is_dir()):
        report = json.loads((d / "embed.json").read_text()) if (d / "embed.json").is_file() else {}
        if report.get("status") == "complete":
            found.append((d, report))
    if not found:
        raise DataError(f"{embeddings}: no finished slide embeddings (<slide>/embed.json with status complete)")
    return found


def predict_mil(mil_checkpoint: str | Path, embeddings: str | Path, out: str | Path) -> dict:
    """Score every embedded slide of `embeddings` with the MIL model; returns the summary."""
    model, meta = load_mil(mil_checkpoint)
    trained_on = meta.get("embedding") or {}
    classes = list(meta["class_names"])
    out = Path(out)
    rows, empty = [], []
    for d, report in embedded_slides(Path(embeddings)):
        ident = embedding_identity(report)
        if trained_on and ident != trained_on:
            raise CheckpointError(
                f"{mil_checkpoint}: trained on embeddings of {describe_embedding(trained_on)}, but slide "
                f"{d.name} in {embeddings} was embedded with {describe_embedding(ident)}; embed the slides "
                f"the way the MIL model's training slides were"
            )
        features = np.load(d / "embeddings.npy").astype(np.float32)
        if features.ndim != 2 or (len(features) and features.shape[1] != meta["in_features"]):
            raise DataError(
                f"{d / 'embeddings.npy'}: features of shape {features.shape}; the MIL model takes "
                f"{meta['in_features']} per tile"
            )
        if not len(features):  # no tissue tile: nothing to score, counted and listed
            empty.append(d.name)
            continue
        result = predict_bag(model, features)
        tiles = pd.read_parquet(d / "tiles.parquet") if (d / "tiles.parquet").is_file() else pd.DataFrame()
        tiles = tiles.reindex(columns=[c for c in ("tile_id", "x", "y") if c in tiles.columns])
        tiles["attention"] = result["attention"]
        (out / d.name).mkdir(parents=True, exist_ok=True)
        with atomic_path(out / d.name / "attention.parquet") as tmp:
            tiles.to_parquet(tmp, index=False)
        rows.append(
            {
                "slide": d.name,
                "tiles": len(features),
                "score": result["score"],
                "prediction": classes[result["prediction"]],
                **{f"p_{c}": p for c, p in zip(classes, result["probabilities"])},
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "predictions.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    if empty:
        log.warning("%d slide(s) have no embedded tiles and no score: %s", len(empty), ", ".join(empty))
    summary = {
        "mil_checkpoint": str(mil_checkpoint),
        "task": meta.get("task"),
        "classes": classes,
        "embedding": trained_on,
        "slides": len(rows),
        "no_tiles": empty,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
