"""Every config schema histoflow reads, in one idiom: strict pydantic models from YAML + `--set`.

- `base`: `Strict`, YAML reading (duplicate keys refused), overrides, validation errors.
- `run`: `RunConfig` for `train` and `tune` (data, augment, model, train, preprocess...).
- `preprocess`: colour preprocessing (stain normalisation, CLAHE) and HSV jitter.
- `tiling`: `TileConfig` for `tile`; `slides`: slide prediction, aggregation and MIL bags; `mil`: train-mil.
"""

from histoflow.config.base import (
    Strict,
    apply_overrides,
    field_paths,
    load_model_config,
    read_yaml,
    save_config,
    validate,
)
from histoflow.config.mil import MILConfig, MILData, MILModel, MILTrain
from histoflow.config.preprocess import ClaheConfig, HsvJitter, PreprocessConfig
from histoflow.config.run import (
    Affine,
    AugmentConfig,
    BalanceConfig,
    Blur,
    ColourJitter,
    DataConfig,
    EarlyStopping,
    HedJitter,
    ModelConfig,
    NormalizeConfig,
    OptimizerConfig,
    ResizedCrop,
    RunConfig,
    SchedulerConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
    load_config,
)
from histoflow.config.slides import AggregateConfig, BagConfig, SlidePredictConfig
from histoflow.config.tiling import TileConfig

__all__ = [
    "Affine",
    "AggregateConfig",
    "AugmentConfig",
    "BagConfig",
    "BalanceConfig",
    "Blur",
    "ClaheConfig",
    "ColourJitter",
    "DataConfig",
    "EarlyStopping",
    "HedJitter",
    "HsvJitter",
    "MILConfig",
    "MILData",
    "MILModel",
    "MILTrain",
    "ModelConfig",
    "NormalizeConfig",
    "OptimizerConfig",
    "PreprocessConfig",
    "ResizedCrop",
    "RunConfig",
    "SchedulerConfig",
    "SlidePredictConfig",
    "SplitConfig",
    "Strict",
    "TileConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "field_paths",
    "load_config",
    "load_model_config",
    "read_yaml",
    "save_config",
    "validate",
]
