"""Every config schema histoflow reads, in one idiom: strict pydantic models from YAML + `--set`.

- `base`: `Strict`, YAML reading (duplicate keys refused), overrides, validation errors.
- `run`: `RunConfig` for `train` and `tune` (data, augment, model, train, preprocess...).
- `preprocess`: colour preprocessing (stain normalisation, CLAHE) and HSV jitter.
"""

from histoflow.config.base import (Strict, apply_overrides, field_paths, load_model_config, read_yaml, save_config,
                                   validate)
from histoflow.config.preprocess import ClaheConfig, HsvJitter, PreprocessConfig
from histoflow.config.run import (Affine, AugmentConfig, BalanceConfig, Blur, ColourJitter, DataConfig, EarlyStopping,
                                  HedJitter, ModelConfig, NormalizeConfig, OptimizerConfig, ResizedCrop, RunConfig,
                                  SchedulerConfig, SplitConfig, TrackingConfig, TrainConfig, load_config)

__all__ = [
    "Affine", "AugmentConfig", "BalanceConfig", "Blur", "ClaheConfig", "ColourJitter", "DataConfig", "EarlyStopping",
    "HedJitter", "HsvJitter", "ModelConfig", "NormalizeConfig", "OptimizerConfig", "PreprocessConfig", "ResizedCrop",
    "RunConfig", "SchedulerConfig", "SplitConfig", "Strict", "TrackingConfig", "TrainConfig", "apply_overrides",
    "field_paths", "load_config", "load_model_config", "read_yaml", "save_config", "validate",
]
