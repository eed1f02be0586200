"""`StudyConfig`: one whole-slide study (`histoflow study STUDY.yaml`).

Slides and a label CSV go in; tiles, a tile classifier, embeddings with attention MIL, slide-level
evaluation on held-out slides, heatmaps and a report come out. Each section holds the keys of the
schema that stage already has (`tile`: TileConfig, `tile_model`: RunConfig, `mil`: MILModel and
MILTrain), so a study reads like the commands it replaces. Paths are relative to the study file.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, PositiveFloat, PositiveInt

from histoflow.config.base import Strict
from histoflow.config.mil import MILModel, MILTrain


class StudyTiling(Strict):
    """How slides become tiles: the keys of TileConfig in `settings`, and the engine."""

    engine: Literal["local", "spark"] = "local"
    workers: PositiveInt | None = None  # local engine processes (default: all cores)
    spark_master: str = "local[*]"
    settings: dict[str, Any] = Field(default_factory=lambda: {"tile_px": 256, "mpp": 0.5})


class StudyTileModel(Strict):
    """The tile classifier: a recipe (a run config YAML) and `--set`-style overrides on it;
    data.tiles and data.labels are the study's."""

    recipe: str | None = None  # run config YAML; none: histoflow's defaults
    set: list[str] = Field(default_factory=list)  # e.g. ["train.epochs=3", "model.name=resnet50"]


class StudyMIL(Strict):
    """Attention MIL on embeddings of every tile. The encoder is the tile classifier's backbone
    unless `encoder` names another histoflow checkpoint."""

    enabled: bool = True
    encoder: str | None = None
    model: MILModel = Field(default_factory=MILModel)
    train: MILTrain = Field(default_factory=MILTrain)


Aggregation = Literal["mean", "max", "topk_mean", "fraction"]  # as histoflow.predict.aggregate names them


class StudyEvaluation(Strict):
    """Slide scores from tile probabilities, and their uncertainty."""

    aggregations: list[Aggregation] = Field(default_factory=lambda: list(get_args(Aggregation)))
    top_k: PositiveInt = 10  # tiles averaged by topk_mean
    threshold: float = Field(default=0.5, ge=0, le=1)
    n_boot: PositiveInt = 1000
    heatmaps: Literal["none", "test", "all"] = "test"  # predict-slide heatmaps of these slides


class StudyConfig(Strict):
    name: str = "study"
    slides: str | list[str]  # slide files and/or folders of slides
    labels: str  # slide,label[,patient][,split] (or region rows slide,x,y,width,height,label)
    # binary: two classes, slide AUC; ordinal: classes in label order (1 < 2 < 3), quadratic kappa
    task: Literal["auto", "binary", "ordinal", "multiclass"] = "auto"
    slide_mpp: PositiveFloat | None = None  # level-0 mpp for slides whose files lack it
    seed: int = 42
    tiling: StudyTiling = Field(default_factory=StudyTiling)
    tile_model: StudyTileModel = Field(default_factory=StudyTileModel)
    mil: StudyMIL = Field(default_factory=StudyMIL)
    evaluation: StudyEvaluation = Field(default_factory=StudyEvaluation)
