"""Slide-level schemas: prediction on whole slides (`SlidePredictConfig`, `AggregateConfig`) and
MIL bags built from labelled patches (`BagConfig`).

Frozen strict pydantic models (see config.base.FrozenConfig): constraints are types, and a bad
value raises `ConfigError` naming the field and what it expects.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from histoflow.config.base import FrozenConfig

AGGREGATE_METHODS = ("max", "mean", "topk_mean", "fraction")


class AggregateConfig(FrozenConfig):
    """How tile probabilities become one slide score (see histoflow.predict.aggregate)."""

    method: Literal["max", "mean", "topk_mean", "fraction"] = "topk_mean"  # reported as `score` in slide.json
    k: PositiveInt = 10  # top-k mean: tiles averaged (fewer when the slide has fewer)
    threshold: float = Field(default=0.5, ge=0, le=1)  # fraction above threshold; also the GeoJSON threshold


class SlidePredictConfig(FrozenConfig):
    mpp: PositiveFloat | None = None  # tile resolution; overrides/supplies the checkpoint's `mpp`
    slide_mpp: PositiveFloat | None = None  # level-0 mpp for slides whose file lacks it
    allow_resample: bool = False  # upsample when the slide is coarser than the checkpoint needs
    overlap_px: NonNegativeInt = 0
    tissue_threshold: float = Field(default=0.5, ge=0, le=1)
    mask_um_per_px: PositiveFloat = 4.0
    batch_size: PositiveInt = 64
    # reader threads (0: read in the model's thread between batches); None: predict.pipeline.reader_threads
    workers: NonNegativeInt | None = None
    prefetch: PositiveInt = 4  # batches decoded ahead of the model
    tta: bool = False
    positive_class: str | None = None  # class shown in heatmaps and scored; default: last class
    aggregate: AggregateConfig = Field(default_factory=lambda: AggregateConfig())
    backend: str = "auto"
    device: str | None = None
    thumbnail_px: PositiveInt = 1200
    tiles_dir: str | None = None  # read tiles from a `histoflow tile` run instead of the slide
    mil_checkpoint: str | None = None  # learned aggregator (histoflow train-mil), applied by histoflow.mil
    max_tiles: PositiveInt | None = None  # first N tiles only (smoke tests, benchmarks)

    def to_dict(self) -> dict:
        return self.model_dump()


class BagConfig(FrozenConfig):
    """MIL bags drawn from a labelled patch split (see histoflow.mil.bags)."""

    split: str = "valid"  # PCam folder whose patches make the bags (not the backbone's training split)
    patients: PositiveInt = 30
    bags_per_patient: PositiveInt = 10
    bag_size: PositiveInt = 32
    k: int = 2  # positive bag: at least k tumour patches (range checked against bag_size by plan_bags)
    max_fraction: float = Field(default=0.5, gt=0, le=1)
    grade_cuts: tuple[float, float] = (0.1, 0.3)  # grade 1 below 10% tumour, 2 below 30%, else 3
    seed: int = 0
