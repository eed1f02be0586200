"""`fit(config, out)`: training only, from a config to a run folder.

runs/<name>/
  config.yaml     the resolved config (what actually ran)
  splits.csv      every image with its split (train/val/test)
  checkpoints/    best.pt, last.pt (histoflow checkpoints); resume.ckpt (Lightning, for --resume)
                  while training, training_done.json once it finished (see train.resume)
  history.csv     per-epoch losses and metrics
  tb/             TensorBoard logs

Evaluation (metrics.json), the report and experiment tracking follow in
`histoflow.workflows.run.run`, which is what `histoflow train` calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from histoflow.checkpoint import save_checkpoint
from histoflow.config import RunConfig, save_config
from histoflow.core.errors import ConfigError
from histoflow.core.runtime import keep_freed_memory_in_heap
from histoflow.data.classes import positive_class_of
from histoflow.data.loading import make_loader
from histoflow.data.manifest import Manifest
from histoflow.data.samplers import class_weights
from histoflow.data.sizes import common_size
from histoflow.models.factory import create_model, set_backbone_trainable
from histoflow.train.callbacks import HistoflowCheckpoint, HistoryWriter, StopOnNonFiniteLoss, ema_weights
from histoflow.train.data import RunData, build_run_data, train_sampler
from histoflow.train.module import ClassifierModule
from histoflow.train.preflight import check_run_config, quiet_lightning
from histoflow.train.resume import (
    RESUME_CKPT,
    ResumeCheckpoint,
    can_resume,
    loader_generators,
    mark_training_done,
    resume_checkpoint,
    training_done,
)

log = logging.getLogger(__name__)


def resolve_precision(precision: str, accelerator: str) -> str:
    """auto: 16-mixed on CUDA; bf16-mixed on a CPU with native bf16 (AVX512-BF16/AMX), else 32.
    On CPUs without it, bf16 is emulated and slower than fp32."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    capability = torch.backends.cpu.get_cpu_capability()
    return "bf16-mixed" if ("AVX512_BF16" in capability or "AMX" in capability) else "32-true"


def training_resolution(cfg: RunConfig, data: RunData, source_size: list[int] | None) -> dict:
    """What predict-slide and embed read from the checkpoint instead of --mpp: the microns per
    pixel of the training images and their side in pixels at that mpp (tiles: as tiled)."""
    if cfg.data.mpp is None:
        return {}
    if data.cohort is not None:
        pixels = {} if data.cohort.pixels_version is None else {"pixels_version": data.cohort.pixels_version}
        return {"mpp": cfg.data.mpp, "tile_px": data.cohort.tile_px, **pixels}
    square = source_size is not None and source_size[0] == source_size[1]
    return {"mpp": cfg.data.mpp, "tile_px": source_size[0] if square and source_size else cfg.data.image_px}


def _progress_bar(quiet: bool) -> list:
    """Lightning's rich progress bar (its own, kept: it knows epochs and metrics), none when quiet."""
    if quiet:
        return []
    from lightning.pytorch.callbacks import RichProgressBar

    return [RichProgressBar(leave=True)]


@dataclass
class FitResult:
    """What a finished `fit` hands to evaluation: the run folder, the data it trained on (so the
    val/test sets are evaluated exactly as built), the training wall time, and whether this
    process is the one that writes (rank 0 under DDP)."""

    run_dir: Path
    data: RunData
    seconds: float
    main_process: bool
    notes: list[str] = field(default_factory=list)  # for metrics.json: what this run did unusually


def fit(cfg: RunConfig, out: str | Path, manifest: Manifest | None = None, **options: Any) -> Path:
    """Train per `cfg` into folder `out` (training only: no evaluation); returns the run folder.

    `manifest`: the images to train on, as `read_manifest` (and `split_manifest`) returned them,
    instead of `cfg.data.path`; the run folder keeps it as `data.csv`, which its config.yaml
    names, so `--resume` and `evaluate` find the same data. `options` are those of `fit_run`
    (resume, callbacks, loggers, quiet, make_loggers)."""
    return fit_run(cfg, out, manifest=manifest, **options).run_dir


def fit_run(
    cfg: RunConfig,
    out: str | Path,
    resume: bool = False,
    callbacks: list | None = None,
    loggers: list | None = None,
    quiet: bool = False,
    make_loggers: Callable[[RunConfig, Path], list] | None = None,
    manifest: Manifest | None = None,
) -> FitResult:
    """Train per `cfg` into folder `out`.

    `callbacks` / `loggers` are extra Lightning callbacks and loggers (e.g. Optuna pruning);
    TensorBoard is always written. `make_loggers(cfg, run_dir)` builds loggers that need the run
    folder ready (MLflow records its run id there); it is called only when Lightning trains.
    `quiet` drops the progress bar.
    """
    run_dir = Path(out)
    ckpt_dir = run_dir / "checkpoints"
    if resume and not can_resume(run_dir):
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(
                f"--resume: {run_dir} holds no {ckpt_dir / RESUME_CKPT} (nor a finished training) to resume from"
            )
        # killed in the first epoch, before any epoch-start checkpoint: its start is the beginning,
        # so training again from scratch is the exact resume (history.csv and best.pt are rewritten)
        log.warning("%s: interrupted in the first epoch; training again from the start", run_dir)
        resume = False
    elif not resume and can_resume(run_dir):
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    check_run_config(cfg, data_given=manifest is not None)  # every cheap check before any data work or run folder
    done = training_done(run_dir) if resume else None
    if done is not None:  # training finished before the interruption: nothing to retrain or rewrite
        log.info("%s: training already finished; resuming with evaluation", run_dir)
        data = build_run_data(cfg, None, notes=[])
        # lightning sets `rank` on the rank_zero_only function at import; its stub does not declare it
        is_main = rank_zero_only.rank == 0  # type: ignore[attr-defined]
        return FitResult(run_dir, data, done.get("train_seconds", 0.0), is_main, list(done.get("notes", [])))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    keep_freed_memory_in_heap()  # glibc would hand freed batch memory back to the OS each step; see core.runtime
    started = time.perf_counter()

    notes: list[str] = []
    # data errors (columns, classes, files) leave no run folder
    data = build_run_data(cfg, None, notes=notes, manifest=manifest)
    if data.resolved:  # decided by the data (tiles: their size and mpp): config.yaml says what ran
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=data.resolved)})
    run_dir.mkdir(parents=True, exist_ok=True)
    if manifest is not None:  # data given in memory: kept in the run, and config.yaml points at it
        given = data.manifest.to_csv(run_dir / "data.csv")
        cfg = cfg.model_copy(
            update={"data": cfg.data.model_copy(update={"path": str(given.resolve()), "format": "csv"})}
        )
    save_config(cfg, run_dir / "config.yaml")
    data.manifest.to_csv(run_dir / "splits.csv")
    n_classes = len(data.class_names)
    model = create_model(cfg.model, n_classes, mean=data.mean, std=data.std)
    model_cfg = cfg.model.model_dump(mode="json")

    source_size = common_size(data.manifest.split("train"))  # evaluate/predict warn on other sizes
    resolution = training_resolution(cfg, data, source_size)

    def save(name: str, extra: dict) -> None:
        save_checkpoint(
            ckpt_dir / name,
            model,
            model_config=model_cfg,
            class_names=data.class_names,
            image_px=cfg.data.image_px,
            run_config=cfg.model_dump(mode="json"),
            preprocess=data.preprocess_state,
            extra={
                "positive_class": positive_class_of(data.class_names),
                "source_image_size": source_size,
                **resolution,
                **extra,
            },
        )

    t = cfg.train
    weights = class_weights(data.train.labels, n_classes) if cfg.data.balance.loss_weights else None
    sampler = train_sampler(cfg, data)
    # Several devices need torch DataLoaders (Lightning swaps in distributed samplers); on one,
    # make_loader picks thread workers where the data decodes outside the GIL
    threads = None if str(t.devices) in ("1", "auto") and t.strategy in ("auto", "single_device") else False
    train_loader = make_loader(
        data.train, t.batch_size, cfg.data.num_workers, shuffle=True, sampler=sampler, seed=cfg.seed, threads=threads
    )
    val_loader = (
        make_loader(data.val, t.batch_size * 2, cfg.data.num_workers, threads=threads) if data.val is not None else None
    )

    if getattr(model.backbone, "sklearn_fit", False):
        from histoflow.models.baselines import fit_sklearn_head

        info = fit_sklearn_head(model, make_loader(data.train, 512, cfg.data.num_workers))
        save("best.pt", {"epoch": 0, **info})
        save("last.pt", {"epoch": 0, **info})
    else:
        if make_loggers is not None:
            loggers = [*(loggers or []), *make_loggers(cfg, run_dir)]
        _fit_lightning(
            cfg,
            model,
            weights,
            train_loader,
            val_loader,
            run_dir,
            save,
            resume,
            list(callbacks or []),
            list(loggers or []),
            quiet,
            monitor_val_loss=bool(notes),
        )
        if t.ema_decay and val_loader is None and rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # as above
            save("last.pt", {"epoch": t.epochs - 1})  # no validation: EMA copied its averages in at train end

    wall = time.perf_counter() - started
    # DDP: only rank 0 goes on to evaluate and write (`rank`: set by lightning, not in its stub)
    main_process = rank_zero_only.rank == 0  # type: ignore[attr-defined]
    if main_process:
        log.info("training took %.0f s", wall)
        mark_training_done(run_dir, wall, notes)
    return FitResult(run_dir, data, wall, main_process, notes)


def _fit_lightning(
    cfg,
    model,
    weights,
    train_loader,
    val_loader,
    run_dir,
    save,
    resume,
    extra_callbacks,
    extra_loggers,
    quiet,
    monitor_val_loss=False,
):
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.loggers import TensorBoardLogger

    t = cfg.train
    ckpt_dir = run_dir / "checkpoints"
    monitor = t.early_stopping.monitor if t.early_stopping else ("val_auc" if val_loader is not None else "train_loss")
    mode = t.early_stopping.mode if t.early_stopping else ("max" if monitor.endswith(("auc", "acc")) else "min")
    if monitor_val_loss and monitor == "val_auc":  # one-class validation split, allowed by train.one_class_val
        monitor, mode = "val_loss", "min"
    steps_per_epoch = (
        len(train_loader) if t.max_steps_per_epoch is None else min(len(train_loader), t.max_steps_per_epoch)
    )
    callbacks = [
        StopOnNonFiniteLoss(),
        HistoryWriter(run_dir / "history.csv"),
        HistoflowCheckpoint(save, monitor, mode),
        # the one checkpoint --resume continues from: epoch boundaries, random states included
        ResumeCheckpoint(ckpt_dir / RESUME_CKPT, loader_generators(train_loader)),
        *_progress_bar(quiet),
        *extra_callbacks,
    ]
    if t.ema_decay:
        callbacks.append(ema_weights(t.ema_decay))  # after HistoflowCheckpoint: see ema_weights
    if t.early_stopping:
        e = t.early_stopping
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=e.patience, check_finite=True))

    trainer_kw = dict(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=resolve_precision(t.precision, t.accelerator),
        deterministic=t.deterministic,
        logger=[TensorBoardLogger(run_dir, name="tb", version=""), *extra_loggers],
        callbacks=callbacks,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(10, steps_per_epoch)),  # small data: no "fewer batches than" warning
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
        # None, not 1.0: an explicit 1.0 makes Lightning print that 100% of the batches will be used
        limit_train_batches=t.max_steps_per_epoch,
        enable_progress_bar=not quiet,
        min_epochs=t.early_stopping.min_epochs if t.early_stopping else None,
    )
    ckpt_path = resume_checkpoint(run_dir) if resume else None
    if ckpt_path is not None and ckpt_path.name != RESUME_CKPT:
        log.warning(
            "%s: a checkpoint of an older histoflow; the resumed run may differ from an uninterrupted one", ckpt_path
        )
    freeze = cfg.model.freeze
    batch_augment = None
    if cfg.augment.where == "batch":
        from histoflow.data.batch_augment import BatchAugment

        batch_augment = BatchAugment(cfg.augment)
    module = ClassifierModule(
        model,
        t,
        weights,
        channels_last=cfg.model.channels_last,
        frozen_backbone=freeze != "none",
        batch_augment=batch_augment,
        val_auc=not monitor_val_loss,
    )
    module.run_dir = run_dir
    if freeze in ("backbone", "head_then_full"):
        set_backbone_trainable(model, False)
    if freeze == "head_then_full" and not resume:
        # stage 1: head only, at the configured lr; stage 2: everything at a lower lr
        head_epochs = min(cfg.model.head_epochs, t.epochs)
        with quiet_lightning():
            stage1 = L.Trainer(max_epochs=head_epochs, **trainer_kw)
            stage1.fit(module, train_loader, val_loader)
        set_backbone_trainable(model, True)
        module.frozen_backbone = False
        module.cfg = t.model_copy(
            update={"optimizer": t.optimizer.model_copy(update={"lr": t.optimizer.lr * cfg.model.finetune_lr_factor})}
        )
        remaining = t.epochs - head_epochs
        if remaining <= 0:
            return
        trainer_kw["logger"] = [TensorBoardLogger(run_dir, name="tb", version="full"), *extra_loggers]
        for callback in callbacks:
            if isinstance(callback, HistoryWriter):
                callback.epoch_offset = head_epochs
        with quiet_lightning():
            trainer = L.Trainer(max_epochs=remaining, **trainer_kw)
            trainer.fit(module, train_loader, val_loader)
        return
    if freeze == "head_then_full" and resume:
        set_backbone_trainable(model, True)
        module.frozen_backbone = False
    with quiet_lightning():
        trainer = L.Trainer(max_epochs=t.epochs, **trainer_kw)
        trainer.fit(module, train_loader, val_loader, ckpt_path=None if ckpt_path is None else str(ckpt_path))
