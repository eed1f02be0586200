"""A registry of model factories: `@register_model("name")`, looked up by `resolve(name)`.

The registry knows no model itself: the built-ins (baselines, ensemble) register on import, and
`histoflow.models.factory` imports them before handing out factories or listing models.

Names not registered by histoflow itself are tried as timm backbones, so every timm model
(resnet34, densenet161, legacy_xception, convnext_tiny...) works by name. An unknown name fails
listing the closest registered and timm names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from histoflow.core.errors import ConfigError

_FACTORIES: dict[str, Callable] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str = "") -> Callable:
    def wrap(factory: Callable) -> Callable:
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} is already registered")
        _FACTORIES[name] = factory
        _DESCRIPTIONS[name] = description or (factory.__doc__ or "").strip().splitlines()[0]
        return factory

    return wrap


def descriptions() -> dict[str, str]:
    """Name -> one-line description of every model registered so far."""
    return dict(_DESCRIPTIONS)


def timm_names() -> list[str]:
    import timm

    return timm.list_models()


def resolve(name: str) -> Callable:
    """The factory for `name`: a registered model, else a timm backbone, else a helpful error."""
    if name in _FACTORIES:
        return _FACTORIES[name]
    timm_all = timm_names()
    if name in timm_all:
        from histoflow.models.backbones import timm_backbone

        return lambda **kw: timm_backbone(name, **kw)
    close = difflib.get_close_matches(name, list(_FACTORIES) + timm_all, n=5, cutoff=0.5)
    hint = f" Closest names: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"unknown model {name!r}.{hint} `histoflow models` lists histoflow's models; any timm model name works too."
    )
