"""Baselines every study starts from: a small CNN and a logistic regression floor."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from histoflow.core.errors import ConfigError
from histoflow.models.registry import register_model


class SimpleCNN(nn.Module):
    """Stages of (conv-BN-ReLU) x depth + max-pool, then global average pooling.

    Small and fast on 50-96 px patches on a CPU; width/depth configurable.
    `pool_first: true` max-pools right after each stage's last convolution, before its BN and
    ReLU (conv-pool-BN-ReLU): BN and ReLU then run on a quarter of the pixels, and these
    memory-bound passes are most of a small CNN's time on a CPU. Max-pool commutes with ReLU and with a positive BN scale, so the
    network's expressive power is unchanged.
    """

    def __init__(
        self, widths=(32, 64, 128, 256), depth: int | Sequence[int] = 2, in_channels: int = 3, pool_first: bool = False
    ):
        super().__init__()
        # one depth for every stage, or one per stage: [1, 1, 2, 2] adds convolutions only where
        # the maps are small and they are cheap
        depths = [int(depth)] * len(widths) if isinstance(depth, int) else [int(d) for d in depth]
        if len(depths) != len(widths) or min(depths) < 1:
            raise ConfigError(
                f"simple_cnn: depth must be >= 1 or a list of one depth >= 1 per stage "
                f"({len(widths)} widths), got {depth}"
            )
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, (width, stage_depth) in enumerate(zip(widths, depths)):
            pool_here = i < len(widths) - 1
            for d in range(stage_depth):
                layers.append(nn.Conv2d(c_in, width, 3, padding=1, bias=False))
                if pool_here and pool_first and d == stage_depth - 1:
                    layers.append(nn.MaxPool2d(2))
                layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c_in = width
            if pool_here and not pool_first:
                layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = c_in

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.body[-1]  # last ReLU: the deepest spatial map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x))


@register_model("simple_cnn", "small configurable CNN (widths, depth); fast on CPU for 50-96 px patches")
def simple_cnn(
    widths=(32, 64, 128, 256), depth: int | Sequence[int] = 2, pool_first: bool = False, pretrained: bool = False, **_
) -> nn.Module:
    return SimpleCNN(tuple(widths), depth, pool_first=pool_first)


class ColourHistogram(nn.Module):
    """Per-channel colour histograms (+ a coarse thumbnail) as features, computed in torch.

    The features are fixed; only the linear head learns. Fitted with scikit-learn's
    LogisticRegression (see `fit_sklearn`) rather than SGD: it is the interpretable floor.
    """

    sklearn_fit = True
    feat_mean: torch.Tensor  # buffers, registered in __init__
    feat_std: torch.Tensor

    def __init__(self, bins: int = 32, thumbnail_px: int = 8):
        super().__init__()
        self.bins = bins
        self.thumbnail_px = thumbnail_px
        self.num_features = 3 * bins + 3 * thumbnail_px * thumbnail_px
        self.register_buffer("feat_mean", torch.zeros(self.num_features))
        self.register_buffer("feat_std", torch.ones(self.num_features))
        self.gradcam_layer = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x arrives normalised; histogram on the normalised values in a fixed range
        n = x.shape[0]
        flat = x.float().reshape(n, 3, -1).clamp(-3, 3)
        idx = ((flat + 3) / 6 * (self.bins - 1)).round().long()
        hist = torch.zeros(n, 3, self.bins, device=x.device).scatter_add_(2, idx, torch.ones_like(flat))
        hist = hist / flat.shape[-1]
        thumb = nn.functional.adaptive_avg_pool2d(x.float(), self.thumbnail_px).reshape(n, -1)
        feats = torch.cat([hist.reshape(n, -1), thumb], dim=1)
        return (feats - self.feat_mean) / self.feat_std


@register_model(
    "logistic_regression", "scikit-learn logistic regression on colour histograms + 8x8 thumbnail (the floor)"
)
def logistic_regression(bins: int = 32, thumbnail_px: int = 8, **_) -> nn.Module:
    return ColourHistogram(bins, thumbnail_px)


def fit_sklearn_head(classifier, loader, max_iter: int = 1000, C: float = 1.0) -> dict:
    """Fit the linear head of a fixed-feature classifier with scikit-learn; returns train metrics."""
    from sklearn.linear_model import LogisticRegression

    classifier.eval()
    feats, labels = [], []
    backbone = classifier.backbone
    with torch.no_grad():
        for x, y in loader:
            feats.append(backbone(classifier.preprocess(x)))
            labels.append(y)
    X = torch.cat(feats).double()
    y = torch.cat(labels).numpy()
    mean, std = X.mean(0), X.std(0).clamp_min(1e-6)
    backbone.feat_mean.copy_(mean.float())
    backbone.feat_std.copy_(std.float())
    Xs = ((X - mean) / std).numpy()
    lr = LogisticRegression(max_iter=max_iter, C=C)
    lr.fit(Xs, y)
    linear = classifier.head[-1]
    with torch.no_grad():
        # binary: sklearn's single row of coef_ matches histoflow's single logit
        linear.weight.copy_(torch.as_tensor(lr.coef_, dtype=torch.float32))
        linear.bias.copy_(torch.as_tensor(lr.intercept_, dtype=torch.float32))
    return {"train_accuracy": float(np.mean(lr.predict(Xs) == y)), "n": int(len(y))}
