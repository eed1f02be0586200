"""Gated attention MIL (Ilse, Tomczak & Welling, ICML 2018) over precomputed tile embeddings.

    h_i = ReLU(W x_i)                       per-tile embedding, projected
    a_i = softmax_i( w^T (tanh(V h_i) * sigmoid(U h_i)) )   gated attention
    z   = sum_i a_i h_i                     bag embedding -> head

Heads: binary (one logit), multiclass (one per class) and ordinal (one score s and ordered
thresholds theta_1 < ... < theta_{K-1}; P(y > k) = sigmoid(s - theta_k), the cumulative-link
model: it knows that 3 is further from 1 than 2 is, which a softmax does not).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from histoflow.core.errors import CheckpointError, ConfigError
from histoflow.core.io import atomic_path

TASKS = ("binary", "multiclass", "ordinal")
MIL_FORMAT = 1


class GatedAttentionMIL(nn.Module):
    feat_mean: torch.Tensor  # buffers, registered in __init__
    feat_std: torch.Tensor

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        task: str = "binary",
        hidden: int = 128,
        attention: int = 64,
        dropout: float = 0.25,
    ):
        super().__init__()
        if task not in TASKS:
            raise ConfigError(f"MIL task must be one of {TASKS}, got {task!r}")
        if num_classes < 2:
            raise ConfigError(f"MIL needs at least 2 classes, got {num_classes}")
        self.task, self.num_classes = task, num_classes
        # embeddings from different backbones live on very different scales: standardise with
        # the training bags' statistics (set by train_mil, saved with the weights)
        self.register_buffer("feat_mean", torch.zeros(in_features))
        self.register_buffer("feat_std", torch.ones(in_features))
        self.project = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attn_v = nn.Linear(hidden, attention)
        self.attn_u = nn.Linear(hidden, attention)
        self.attn_w = nn.Linear(attention, 1)
        n_out = 1 if task in ("binary", "ordinal") else num_classes
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_out))
        if task == "ordinal":
            # thresholds kept ordered by construction: first + cumulative softplus gaps
            self.theta0 = nn.Parameter(torch.zeros(1))
            self.gaps = nn.Parameter(torch.zeros(num_classes - 2))

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        """Unnormalised attention scores (N,) of projected tiles h (N, hidden)."""
        return self.attn_w(torch.tanh(self.attn_v(h)) * torch.sigmoid(self.attn_u(h))).squeeze(-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, F) tiles of one bag -> (outputs, attention weights (N,) summing to 1)."""
        h = self.project((x - self.feat_mean) / self.feat_std)
        a = torch.softmax(self.attention(h), dim=0)
        z = (a.unsqueeze(-1) * h).sum(0)
        return self.head(z), a

    def thresholds(self) -> torch.Tensor:
        return torch.cat([self.theta0, self.theta0 + torch.cumsum(F.softplus(self.gaps) + 1e-3, 0)])

    def loss(self, out: torch.Tensor, y: int) -> torch.Tensor:
        if self.task == "binary":
            return F.binary_cross_entropy_with_logits(out.reshape(1), torch.tensor([float(y)], device=out.device))
        if self.task == "multiclass":
            return F.cross_entropy(out.reshape(1, -1), torch.tensor([y], device=out.device))
        cum = out.reshape(1) - self.thresholds()  # logit P(y > k), k = 0..K-2
        target = (torch.arange(self.num_classes - 1, device=out.device) < y).float()
        return F.binary_cross_entropy_with_logits(cum, target)

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """(num_classes,) class probabilities for every task."""
        if self.task == "binary":
            p = torch.sigmoid(out.reshape(()))
            return torch.stack([1 - p, p])
        if self.task == "multiclass":
            return torch.softmax(out.reshape(-1), 0)
        above = torch.sigmoid(out.reshape(1) - self.thresholds())  # P(y > k)
        upper = torch.cat([torch.ones(1, device=out.device), above])
        lower = torch.cat([above, torch.zeros(1, device=out.device)])
        return (upper - lower).clamp_min(0)

    def predict_class(self, out: torch.Tensor) -> int:
        if self.task == "ordinal":  # median class: the number of thresholds passed
            return int((torch.sigmoid(out.reshape(1) - self.thresholds()) > 0.5).sum())
        return int(self.probabilities(out).argmax())


@torch.inference_mode()
def predict_bag(model: GatedAttentionMIL, features: np.ndarray) -> dict:
    """Class probabilities, predicted class index, a scalar score and attention of one bag.

    score: P(last class) for binary/multiclass; the expected class index for ordinal."""
    model.eval()
    out, a = model(torch.as_tensor(np.asarray(features), dtype=torch.float32))
    p = model.probabilities(out).numpy()
    score = float((p * np.arange(len(p))).sum()) if model.task == "ordinal" else float(p[-1])
    return {"probabilities": p.tolist(), "prediction": model.predict_class(out), "score": score, "attention": a.numpy()}


def save_mil(
    path: str | Path,
    model: GatedAttentionMIL,
    *,
    in_features: int,
    class_names: list[str],
    model_config: dict,
    extra: dict | None = None,
) -> Path:
    blob = {
        "mil_format": MIL_FORMAT,
        "task": model.task,
        "in_features": in_features,
        "class_names": class_names,
        "model_config": model_config,
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return Path(path)


def load_mil(path: str | Path) -> tuple[GatedAttentionMIL, dict]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: MIL checkpoint not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable MIL checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(blob, dict) or blob.get("mil_format") != MIL_FORMAT:
        raise CheckpointError(f"{path}: not a histoflow MIL checkpoint (train one with `histoflow train-mil`)")
    model = GatedAttentionMIL(blob["in_features"], len(blob["class_names"]), blob["task"], **blob["model_config"])
    model.load_state_dict(blob["state_dict"])
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    meta["path"] = str(path)
    return model.eval(), meta
