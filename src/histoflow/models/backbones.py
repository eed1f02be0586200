"""timm backbones behind histoflow's backbone interface (pooled features + Grad-CAM layer)."""

from __future__ import annotations

import logging

from torch import nn

from histoflow.core.errors import ConfigError

log = logging.getLogger(__name__)


class TimmBackbone(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_features = model.num_features

    @property
    def gradcam_layer(self) -> nn.Module:
        # timm records where each feature stage lives; the last one is the deepest spatial map
        info = getattr(self.model, "feature_info", None)
        if info:
            last = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
            return self.model.get_submodule(last)
        convs = [m for m in self.model.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1]

    def forward(self, x):
        return self.model(x)  # num_classes=0: timm returns pooled features


def timm_backbone(name: str, pretrained: bool = False, **params) -> TimmBackbone:
    """A timm model without its classifier. `pretrained` loads timm's weights (needs the hub)."""
    import timm

    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, **params)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: bad params {params} ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - hub/network failures surface with advice
        if pretrained:
            raise ConfigError(
                f"model {name!r}: cannot load pretrained weights ({type(exc).__name__}: {exc}). Offline? "
                f"Save the weights once and use `model.weights: PATH` instead of `pretrained: true`"
            ) from exc
        raise
    return TimmBackbone(model)
