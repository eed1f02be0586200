"""Attention MIL applied at slide prediction: the learned aggregator predict-slide takes.

predict sits below mil and never imports it; it exposes a hook (predict_slides(aggregator=...),
see predict.aggregate.TileAggregator) and this module provides the MIL implementation.
`predict_slides_with_mil` is the entry point for a SlidePredictConfig with `mil_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from histoflow.config.slides import SlidePredictConfig
from histoflow.core.errors import CheckpointError
from histoflow.mil.model import GatedAttentionMIL, load_mil, predict_bag
from histoflow.predict.scale import ScaleOut
from histoflow.predict.slide import predict_slides


class MilAggregator:
    """A trained attention-MIL model as predict's TileAggregator."""

    name = "attention_mil"
    report_key = "mil"
    label = "attention-MIL"

    def __init__(self, model: GatedAttentionMIL, meta: dict, path: str):
        self.model, self.meta, self.path = model, meta, path

    @classmethod
    def load(cls, path: str | Path) -> MilAggregator:
        model, meta = load_mil(path)
        return cls(model, meta, str(path))

    def check_backbone(self, checkpoint_fingerprint: str) -> None:
        """The MIL model only understands features of the checkpoint its bags were embedded with."""
        made_by = self.meta.get("embedding", {})
        if made_by.get("encoder"):
            raise CheckpointError(
                f"{self.path}: MIL aggregator was trained on embeddings of encoder {made_by['encoder']!r} "
                f"(weights sha256 {str(made_by.get('weights_sha256'))[:12]}); predict-slide takes tile features "
                f"from the patch checkpoint's backbone (fingerprint {checkpoint_fingerprint}), which is not that "
                f"encoder. Score encoder embeddings with `histoflow predict-mil EMBEDDINGS --mil-checkpoint MIL`, or use "
                f"a MIL model trained on `histoflow embed --checkpoint` embeddings of this checkpoint"
            )
        want = made_by.get("checkpoint_fingerprint")
        if want and want != checkpoint_fingerprint:
            raise CheckpointError(
                f"{self.path}: MIL aggregator was trained on embeddings of another checkpoint "
                f"(fingerprint {want}, this one {checkpoint_fingerprint}); embed with the same checkpoint"
            )

    def __call__(self, features: np.ndarray) -> dict:
        out = predict_bag(self.model, features)
        return {
            "score": out["score"],
            "attention": out["attention"],
            "report": {"probabilities": out["probabilities"], "prediction": out["prediction"]},
        }


def predict_slides_with_mil(
    checkpoint: str | Path,
    slides: Sequence[str | Path],
    out: str | Path,
    cfg: SlidePredictConfig | None = None,
    progress: bool = True,
    scale: ScaleOut | None = None,
) -> dict:
    """Predict every slide with a patch checkpoint: per slide `out/<slide_id>/` gets tiles.parquet
    (tile id, x, y, probabilities), probabilities.npy, heatmap.png, GeoJSON for QuPath and
    slide.json with the slide scores; returns a summary (complete, failed, scores per slide).

    `cfg` (SlidePredictConfig): the tile resolution (default: what the checkpoint records), the
    slide's own mpp when its file lacks it, tissue threshold, aggregation, reader threads,
    device, TTA, `tiles_dir` to read a `histoflow tile` output instead of the slides, and
    `mil_checkpoint` to add a learned attention-MIL slide score. A slide that fails is reported
    in the summary, never fatal; re-running skips finished slides. `scale`: one worker process
    per device or one Spark task per slide (histoflow.predict.scale), same outputs."""
    cfg = cfg or SlidePredictConfig()
    aggregator = MilAggregator.load(cfg.mil_checkpoint) if cfg.mil_checkpoint else None
    return predict_slides(checkpoint, slides, out, cfg, progress=progress, aggregator=aggregator, scale=scale)
