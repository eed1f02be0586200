"""The run config (`histoflow train`, `tune`): every section of a patch-classifier run.

Every field has a default, so an empty YAML is a valid (laptop-sized) run. Unknown keys are
errors that name the closest valid key: a typo must never be silently ignored.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from histoflow.config.base import Strict, load_model_config
from histoflow.config.preprocess import HsvJitter, PreprocessConfig

Fraction = Annotated[float, Field(ge=0, lt=1)]
Probability = Annotated[float, Field(ge=0, le=1)]


class SplitConfig(Strict):
    """How to split data that has no `split` column (or has only some splits)."""

    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.15
    group_by: str | None = "auto"  # auto: patient, then slide, when present; none: ungrouped


class BalanceConfig(Strict):
    # class-balanced WeightedRandomSampler for training batches (tiles: classes balanced over slides)
    sampler: bool = False
    loss_weights: bool = False  # inverse-frequency class weights in the loss


class DataConfig(Strict):
    path: str = "${HISTOFLOW_DATA}/pcam"
    # whole slides: a `histoflow tile` output folder and its slide label CSV (slide,label[,patient]
    # [,split], or region rows slide,x,y,width,height,label); then `path` is not used
    tiles: str | None = None
    labels: str | None = None
    # tiles: at most this many per slide per epoch, drawn afresh (with balance.sampler, rare-class
    # slides may give more: balance wins over the cap)
    tiles_per_slide: PositiveInt | None = None
    # microns per pixel of the images: recorded in the checkpoint so predict-slide/embed need no
    # --mpp (tiles: read from the shards; a different value here is refused)
    mpp: PositiveFloat | None = None
    format: str = "auto"
    label_column: str = "label"
    label_pattern: str | None = None  # regex with one group: label from file name (flat folders)
    image_px: PositiveInt = 96  # tiles: the tiles' size unless set
    crop_px: PositiveInt | None = None  # centre crop after sizing (PCam: the label is the central 32 px)
    size_policy: Literal["resize", "pad", "raise"] = "resize"
    non_rgb: Literal["convert", "raise"] = "convert"
    on_error: Literal["raise", "skip"] = "raise"
    # binary tasks: the class sensitivity/PPV/ROC are about; needed when the names do not say it
    # (0/1, benign/malignant, normal/tumour do; e.g. stroma/epithelium does not)
    positive_class: str | None = None
    verify: bool = True  # decode every image once before training
    cache: Literal["none", "memory"] = "none"
    max_per_split: PositiveInt | None = None  # stratified subsample of each split (quick runs)
    split: SplitConfig = Field(default_factory=SplitConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    num_workers: NonNegativeInt = 2


class ColourJitter(Strict):
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    p: Probability = 1.0


class Affine(Strict):
    degrees: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)  # zoom
    shear: float = 0.0
    translate: float = 0.0
    p: Probability = 1.0


class ResizedCrop(Strict):
    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.9, 1.1)


class Blur(Strict):
    kernel_px: int = 3
    sigma: tuple[float, float] = (0.1, 1.0)
    p: Probability = 0.2


class HedJitter(Strict):
    """Stain augmentation in haematoxylin-eosin-DAB space (Tellez et al. 2018)."""

    sigma: float = 0.05  # multiplicative perturbation per stain
    bias: float = 0.05  # additive perturbation per stain
    p: Probability = 1.0


class AugmentConfig(Strict):
    dihedral: bool = False  # random rot90 x flip (the 8 symmetries of a square)
    hflip: bool = False
    vflip: bool = False
    colour_jitter: ColourJitter | None = None
    affine: Affine | None = None
    random_resized_crop: ResizedCrop | None = None
    gaussian_blur: Blur | None = None
    hed_jitter: HedJitter | None = None
    hsv_jitter: HsvJitter | None = None
    # dataset: per image in DataLoader workers (any transform). batch: vectorised on whole batches
    # on the training device (GPU-friendly; on a small CPU per-image colour ops cost 1-15 ms each)
    where: Literal["dataset", "batch"] = "dataset"


class ModelConfig(Strict):
    name: str = "simple_cnn"
    params: dict[str, Any] = Field(default_factory=dict)  # passed to the model factory
    pretrained: bool = False  # timm weights (needs the network or a local hub cache)
    weights: str | None = None  # local checkpoint: histoflow's own, or a timm/torchvision state dict
    freeze: Literal["none", "backbone", "head_then_full"] = "none"
    head_epochs: NonNegativeInt = 1  # for head_then_full
    finetune_lr_factor: float = 0.1  # lr multiplier once the backbone is unfrozen
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    channels_last: bool = True


class OptimizerConfig(Strict):
    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-4
    momentum: float = 0.9


class SchedulerConfig(Strict):
    name: Literal["none", "step", "cosine", "plateau", "onecycle"] = "onecycle"
    step_epochs: int = 10
    gamma: float = 0.1
    patience: int = 2
    pct_start: float = 0.25
    warmup_epochs: int = 0


class EarlyStopping(Strict):
    monitor: str = "val_auc"
    mode: Literal["min", "max"] = "max"
    patience: int = 5
    min_epochs: int = 1


class TrainConfig(Strict):
    epochs: PositiveInt = 5
    batch_size: PositiveInt = 128
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    early_stopping: EarlyStopping | None = None
    precision: str = "auto"  # auto: bf16-mixed on a CPU with bf16, 16-mixed on GPU, else 32
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    deterministic: bool = True
    max_steps_per_epoch: PositiveInt | None = None  # cap batches per epoch (smoke runs)
    tta: bool = False  # 8-view dihedral test-time augmentation in evaluation
    # exponential moving average of the weights (e.g. 0.998), used for val/predict; null: none
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = None
    # a validation split with one class has no AUC: raise (default), or select best.pt and stop
    # early on val_loss instead, saying so in metrics.json notes
    one_class_val: Literal["raise", "monitor_val_loss"] = "raise"


class NormalizeConfig(Strict):
    """Per-channel mean/std: imagenet, dataset-computed, or given."""

    kind: Literal["imagenet", "dataset", "fixed"] = "dataset"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


class TrackingConfig(Strict):
    backend: Literal["none", "mlflow"] = "none"
    uri: str = "./mlruns"
    experiment: str = "histoflow"


class RunConfig(Strict):
    """One training run: where the images come from (`data`: a patch dataset, or tile shards of
    whole slides), how they are augmented and normalised, the model, the optimisation, colour
    preprocessing and tracking. Every field has a default; `load_config("pcam_simple_cnn",
    ["train.epochs=3"])` reads a recipe (by name or path) and applies `--set`-style overrides;
    unknown keys are errors naming the closest valid key."""

    name: str = "run"
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)  # stain normalisation / CLAHE
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tune: dict[str, Any] = Field(default_factory=dict)  # search space for `histoflow tune`


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config YAML (or start from defaults), apply `--set` overrides, validate."""
    return load_model_config(RunConfig, path, overrides)
