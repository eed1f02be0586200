"""`MILConfig`: attention-MIL training on stored embeddings (`histoflow train-mil CONFIG.yaml`).

Strict pydantic sections like every schema under config/: data (embeddings, labels, task),
model (attention MIL sizes) and train (epochs, optimiser, seed).
"""

from __future__ import annotations

from typing import Literal

from histoflow.config.base import Strict


class MILData(Strict):
    embeddings: str  # folder holding <id>/embeddings.npy (histoflow embed / bags)
    labels: str  # CSV with the id, label and patient columns
    id_column: str = "bag_id"
    label_column: str = "label"
    group_column: str | None = "patient"  # split by this; None: each bag is its own group
    # the labels' own train/val/test split when every row has one (as tile training keeps it), so
    # MIL and tile models are compared on the same held-out slides; else a grouped split is made
    split_column: str | None = "split"
    task: Literal["binary", "multiclass", "ordinal"] = "binary"
    classes: list[str] | None = None  # class order (ordinal: low to high); default sorted labels
    val_fraction: float = 0.2
    test_fraction: float = 0.2


class MILModel(Strict):
    hidden: int = 128
    attention: int = 64
    dropout: float = 0.25


class MILTrain(Strict):
    epochs: int = 30
    lr: float = 5e-4
    weight_decay: float = 1e-4
    seed: int = 0


class MILConfig(Strict):
    data: MILData
    model: MILModel = MILModel()
    train: MILTrain = MILTrain()
    out: str = "runs/mil"
