"""`concat`: several backbones side by side, pooled features concatenated, one head.

The Kaggle HCD study's Xception + NASNet ensemble is `concat` with
`params: {backbones: [legacy_xception, nasnetalarge]}`.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from histoflow.core.errors import ConfigError
from histoflow.models.registry import register_model, resolve


class ConcatBackbone(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.num_features = sum(cast(int, m.num_features) for m in members)

    @property
    def gradcam_layer(self) -> nn.Module:
        return cast(nn.Module, self.members[0].gradcam_layer)  # explain through the first member

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x) for m in self.members], dim=1)


@register_model("concat", "several backbones side by side, features concatenated, one head")
def concat(
    backbones=("legacy_xception", "nasnetalarge"), pretrained: bool = False, member_params=None, **_
) -> nn.Module:
    if not backbones or len(backbones) < 2:
        raise ConfigError(f"model concat: params.backbones needs at least two names, got {backbones}")
    member_params = member_params or {}
    members = [resolve(name)(pretrained=pretrained, **member_params.get(name, {})) for name in backbones]
    return ConcatBackbone(members)
