"""The LightningModule: loss, optimiser, scheduler, validation metrics. Nothing else.

Binary problems use BCE-with-logits on one logit; multi-class ones cross-entropy (with
optional class weights and label smoothing). Validation AUC comes from torchmetrics.
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import lightning as L
import torch
import torchmetrics
from torch import nn

from histoflow.config import TrainConfig
from histoflow.models.classifier import Classifier


class ClassifierModule(L.LightningModule):
    def __init__(
        self,
        model: Classifier,
        train_cfg: TrainConfig,
        class_weights: torch.Tensor | None = None,
        channels_last: bool = True,
        frozen_backbone: bool = False,
        batch_augment: nn.Module | None = None,
        val_auc: bool = True,
    ):
        super().__init__()
        # False when the validation split has one class: AUC is undefined there, so it is not
        # logged at all (torchmetrics would report 0.0) and the plateau scheduler watches val_loss
        self.log_val_auc = val_auc
        self.model = model
        self.batch_augment = batch_augment  # augment.where: batch
        self.cfg = train_cfg
        self.channels_last = channels_last
        self.frozen_backbone = frozen_backbone
        self.binary = model.num_outputs == 1
        if class_weights is not None:
            self.register_buffer("class_weights", class_weights.float())
        else:
            self.class_weights = None
        n = model.num_classes
        task: Literal["binary", "multiclass"] = "binary" if self.binary else "multiclass"
        kw: dict[str, Any] = {} if self.binary else {"num_classes": n}
        self.val_auc = torchmetrics.AUROC(task=task, **kw)
        self.val_acc = torchmetrics.Accuracy(task=task, **kw)

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.binary:
            target = y.float()
            if self.cfg.label_smoothing:
                target = target * (1 - self.cfg.label_smoothing) + 0.5 * self.cfg.label_smoothing
            pos_weight = None
            weight = None
            if self.class_weights is not None:  # per-sample weight from its class
                weight = self.class_weights[y]
            return nn.functional.binary_cross_entropy_with_logits(
                logits.reshape(-1), target, weight=weight, pos_weight=pos_weight
            )
        return nn.functional.cross_entropy(
            logits, y, weight=self.class_weights, label_smoothing=self.cfg.label_smoothing
        )

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Positive-class probability (binary) or class probabilities (multi-class)."""
        logits = logits.float()
        return torch.sigmoid(logits.reshape(-1)) if self.binary else torch.softmax(logits, dim=1)

    def on_train_epoch_start(self) -> None:
        if self.frozen_backbone:  # fixed feature extractor: BatchNorm statistics stay as loaded
            self.model.backbone.eval()

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.batch_augment is not None:
            x = self.batch_augment(x)
        loss = self.loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", self.loss(logits, y), on_epoch=True, prog_bar=True, batch_size=len(y))
        s = self.scores(logits)
        if self.log_val_auc:
            self.val_auc.update(s, y)
        self.val_acc.update(s, y)

    def on_validation_epoch_end(self) -> None:
        if self.log_val_auc:
            self.log("val_auc", self.val_auc.compute(), prog_bar=True)
        self.log("val_acc", self.val_acc.compute(), prog_bar=True)
        self.val_auc.reset()
        self.val_acc.reset()

    def configure_optimizers(self):
        o = self.cfg.optimizer
        params = [p for p in self.parameters() if p.requires_grad]
        opt: torch.optim.Optimizer
        sched: torch.optim.lr_scheduler.LRScheduler
        if o.name == "sgd":
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)
        elif o.name == "adam":
            opt = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        s = self.cfg.scheduler
        epochs = self.trainer.max_epochs
        if s.name == "none":
            return opt
        if s.name == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=s.step_epochs, gamma=s.gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if s.name == "cosine":
            # fit always gives the Trainer max_epochs
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cast(int, epochs)))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if s.name == "plateau":
            mode: Literal["min", "max"]
            monitor, mode = ("val_auc", "max") if self.log_val_auc else ("val_loss", "min")
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=s.gamma, patience=s.patience)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": monitor, "interval": "epoch"}}
        # OneCycleLR divides by its warm-up length: very short runs need at least 2 warm-up steps
        total = max(int(self.trainer.estimated_stepping_batches), math.ceil(2 / max(s.pct_start, 1e-3)) + 1)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=total, pct_start=s.pct_start)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
