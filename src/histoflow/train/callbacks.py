"""Callbacks: stop on a non-finite loss, write history.csv and histoflow checkpoints, EMA weights."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import lightning as L
import torch

from histoflow.core.errors import TrainingError
from histoflow.core.io import atomic_path


class StopOnNonFiniteLoss(L.Callback):
    """A NaN/inf loss stops training with a clear message; the last good checkpoint is kept
    because checkpoints are only written after finite steps and validations."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise TrainingError(
                f"loss became {loss.item()} at epoch {trainer.current_epoch}, batch {batch_idx}: lower the "
                f"learning rate or check the data; the last good checkpoint is kept in {getattr(pl_module, 'run_dir', 'the run folder')}"
            )


class HistoryWriter(L.Callback):
    """One row per epoch in history.csv: epoch, losses, metrics, learning rate, seconds."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._start = time.perf_counter()
        self.epoch_offset = 0  # a second training stage (head_then_full) continues the numbering

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:  # one writer under DDP
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train_", "val_"))}
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        epoch = trainer.current_epoch + self.epoch_offset
        row = {"epoch": epoch, **metrics, "lr": lr, "seconds": round(time.perf_counter() - self._start, 2)}
        rows = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < epoch]
        rows.append(row)
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


class HistoflowCheckpoint(L.Callback):
    """Write `best.pt` when the monitored metric improves and `last.pt` after every epoch:
    the self-describing checkpoints `predict`/`evaluate` read (Lightning's own last.ckpt
    holds the optimiser state for --resume)."""

    def __init__(self, save_fn, monitor: str, mode: str):
        self.save_fn = save_fn
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = state.get("best")

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        # last.pt here too (validation ends the epoch): under EMAWeights these are the averaged
        # weights that were just validated, not the raw ones
        self.save_fn("last.pt", {"epoch": trainer.current_epoch})
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best = value
            self.save_fn("best.pt", {"epoch": trainer.current_epoch, self.monitor: value})

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.is_global_zero and not trainer.num_val_batches:  # no validation: last.pt per epoch here
            self.save_fn("last.pt", {"epoch": trainer.current_epoch})


def ema_weights(decay: float) -> L.Callback:
    """Lightning's exponential moving average of the weights and BN buffers (validated, saved
    and used for prediction instead of the raw weights), with the raw weights swapped back only
    when validation has fully ended, so that HistoflowCheckpoint, listed before it, saves exactly
    the weights it has just validated. Lightning's own last.ckpt keeps both for --resume.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as timm's ModelEma):
    a fixed 0.998 would keep 30% of the random initial weights after 600 steps, and an average
    of such different networks predicts nonsense (measured: val accuracy 0.5 for four epochs).
    """
    from lightning.pytorch.callbacks import WeightAveraging

    def warm_ema(averaged: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return averaged + (current - averaged) * (1.0 - d)

    class EMAWeights(WeightAveraging):
        def on_validation_epoch_end(self, trainer, pl_module):
            pass  # not yet: the module logs val_auc after this hook, and checkpoints follow

        def on_validation_end(self, trainer, pl_module):
            super().on_validation_epoch_end(trainer, pl_module)  # swap the raw weights back in

    return EMAWeights(avg_fn=warm_ema)
