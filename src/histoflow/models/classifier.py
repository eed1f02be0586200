"""The one model shape histoflow trains: preprocess -> backbone -> head.

- `Preprocess` turns uint8 NCHW into normalised float inside the model, so a checkpoint carries
  its own mean/std and `predict` can never drift from `train`.
- A backbone is any module mapping images to pooled features (N, F), with `num_features` and
  `gradcam_layer` (the last spatial feature map, used by Grad-CAM), so transfer learning,
  feature extraction and explanations are uniform across simple CNNs, timm and ensembles.
- Binary problems have one logit (BCE-with-logits); multi-class ones have one per class.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Preprocess(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    def __init__(
        self, backbone: nn.Module, num_classes: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, dropout: float = 0.0
    ):
        super().__init__()
        self.num_classes = num_classes
        self.num_outputs = 1 if num_classes == 2 else num_classes
        self.preprocess = Preprocess(mean, std)
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Dropout(dropout) if dropout else nn.Identity(),
            nn.Linear(cast(int, backbone.num_features), self.num_outputs),
        )

    @property
    def gradcam_layer(self) -> nn.Module:
        return cast(nn.Module, self.backbone.gradcam_layer)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(N, num_classes) probabilities, for binary and multi-class alike, from the model's
        logits, or from a batch of images (N, 3, H, W): uint8 0-255, or float scaled to 0-1.

        Images are run through the model first; a float batch on the 0-255 scale is refused,
        because scaling happens only for uint8 and it would give confident nonsense."""
        if x.dim() == 4:
            if x.is_floating_point() and x.numel() and float(x.max()) > 1.5:
                raise ValueError(
                    "probabilities(): float images must be scaled to 0-1; pass uint8 (0-255) images as they are"
                )
            x = self(x)
        logits = x.float()
        if self.num_outputs == 1:
            p = torch.sigmoid(logits.reshape(-1))
            return torch.stack([1 - p, p], dim=1)
        return torch.softmax(logits, dim=1)
