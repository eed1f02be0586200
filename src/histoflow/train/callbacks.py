"""Callbacks: stop on a non-finite loss, write history.csv and histoflow checkpoints."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import lightning as L
import torch

from histoflow.errors import TrainingError


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
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)


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
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best = value
            self.save_fn("best.pt", {"epoch": trainer.current_epoch, self.monitor: value})

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.save_fn("last.pt", {"epoch": trainer.current_epoch})
