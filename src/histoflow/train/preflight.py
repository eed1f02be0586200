"""Before any data work: every cheap check of a run config, and Lightning's noise silenced.

`check_run_config` finds what would otherwise fail only after the data has been read, verified
and cached (an unknown model name, a missing file, a batch augmentation that cannot run on
batches, a precision Lightning does not know), and reports all of them at once, before a run
folder exists. Data problems that need the data (a missing label column, a one-class split) are
found when the manifest is read, still before the run folder is made (see `fit_run`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

from histoflow.config import RunConfig
from histoflow.core.errors import ConfigError
from histoflow.core.paths import expand

# what Trainer(precision=...) accepts, and histoflow's "auto"
PRECISIONS = {
    "auto",
    "64",
    "32",
    "16",
    "bf16",
    "64-true",
    "32-true",
    "16-true",
    "bf16-true",
    "16-mixed",
    "bf16-mixed",
    "transformer-engine",
    "transformer-engine-float16",
}
MONITORS = {"val_auc", "val_acc", "val_loss", "train_loss"}  # what ClassifierModule logs


def config_problems(cfg: RunConfig, data_given: bool = False) -> list[str]:
    """Each problem as `key: what is wrong; what to do`. `data_given`: the images come as a
    Manifest, not from data.path."""
    from histoflow.models.factory import get_factory

    problems = []
    try:
        get_factory(cfg.model.name)
    except ConfigError as e:
        problems.append(f"model.name: {e}")
    if not data_given:
        problems += data_problems(cfg)
    from histoflow.models.encoders import encoder_names

    weights = cfg.model.weights
    if cfg.model.name in encoder_names() and weights in ("random", "hub"):  # encoders' keywords, not paths
        weights = None
    for key, value in (("model.weights", weights), ("preprocess.target", cfg.preprocess.target)):
        if value and not expand(value).exists():
            problems.append(f"{key}: {expand(value)} does not exist")
    if cfg.model.freeze != "none" and not (cfg.model.weights or cfg.model.pretrained):
        problems.append(
            f"model.freeze: {cfg.model.freeze} would freeze a randomly initialised backbone; "
            "set model.weights or model.pretrained=true, or model.freeze=none"
        )
    if cfg.augment.where == "batch":
        from histoflow.data.batch_augment import BatchAugment

        try:
            BatchAugment(cfg.augment)
        except ConfigError as e:
            problems.append(str(e))
    if str(cfg.train.precision) not in PRECISIONS:
        problems.append(f"train.precision: {cfg.train.precision!r} is not one of {sorted(PRECISIONS)}")
    es = cfg.train.early_stopping
    if es is not None and es.monitor not in MONITORS:
        problems.append(f"train.early_stopping.monitor: {es.monitor!r} is not logged; use one of {sorted(MONITORS)}")
    return problems


def data_problems(cfg: RunConfig) -> list[str]:
    """Where the data comes from: a patch dataset (data.path) or tile shards (data.tiles + labels)."""
    d = cfg.data
    if d.tiles is None:
        data_path = expand(d.path)
        problems = []
        if not data_path.exists():
            hint = " (set HISTOFLOW_DATA or data.path)" if "HISTOFLOW_DATA" in d.path else ""
            problems.append(f"data.path: {data_path} does not exist{hint}")
        for key, value in (("data.labels", d.labels), ("data.tiles_per_slide", d.tiles_per_slide)):
            if value is not None:
                problems.append(f"{key}: only for whole-slide data; set data.tiles to a `histoflow tile` output folder")
        return problems
    problems = []
    if d.path != type(d).model_fields["path"].default:  # a saved config.yaml holds the default: fine
        problems.append("data.path and data.tiles: give one source of images (data.tiles reads tile shards)")
    if not (expand(d.tiles) / "manifest.parquet").is_file():
        problems.append(f"data.tiles: {expand(d.tiles)} is not a `histoflow tile` output (no manifest.parquet)")
    if d.labels is None:
        problems.append("data.labels: tiles need a label CSV (slide,label[,patient][,split])")
    elif not expand(d.labels).is_file():
        problems.append(f"data.labels: {expand(d.labels)} does not exist")
    return problems


def check_run_config(cfg: RunConfig, data_given: bool = False) -> None:
    """Raise one ConfigError listing every problem `config_problems` finds."""
    problems = config_problems(cfg, data_given)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"the config has {len(problems)} problems:\n  " + "\n  ".join(problems))


# Lightning's INFO lines: "GPU available: False, used: False", "TPU/HPU available", "LOCAL_RANK: 0 -
# CUDA_VISIBLE_DEVICES", "`Trainer.fit` stopped: `max_epochs=1` reached", "Loading `train_dataloader`
# to estimate number of stepping batches", the "💡 Tip" adverts. All go through these loggers or
# their children (the tips' rank_zero logger is a child of lightning.pytorch); histoflow logs what
# it chose itself, so only their warnings stay.
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """While Lightning runs, its INFO lines (device summary, "fit stopped", advertising tips) and
    torch's pytree `LeafSpec` deprecation (raised inside Lightning, nothing a user can act on) are
    dropped, with or without --quiet; Lightning's warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
            )
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
