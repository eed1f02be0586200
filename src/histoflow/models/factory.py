"""Build a Classifier from a ModelConfig; list the models; load local weights; apply freeze policies."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from torch import nn

# the built-in models register themselves on import: every lookup below sees them
import histoflow.models.baselines
import histoflow.models.encoder_backbone
import histoflow.models.ensemble  # noqa: F401
from histoflow.config import ModelConfig
from histoflow.core.errors import CheckpointError, ConfigError
from histoflow.models.classifier import Classifier
from histoflow.models.encoders import is_encoder
from histoflow.models.registry import descriptions, resolve

log = logging.getLogger(__name__)


def get_factory(name: str) -> Callable:
    """The factory for `name`: a histoflow model, else a timm backbone, else a helpful error."""
    return resolve(name)


def list_models() -> dict[str, str]:
    """histoflow's own models, name -> description (any timm backbone name works too)."""
    return descriptions()


def create_model(cfg: ModelConfig | str, num_classes: int, mean=None, std=None) -> Classifier:
    """A Classifier for `num_classes` classes; `cfg` may be a model name."""
    if isinstance(cfg, str):
        cfg = ModelConfig(name=cfg)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if is_encoder(cfg.name):
        # an encoder loads its weights itself, strictly, into an unallocated model (no random init
        # of a giant ViT first), and its features only mean something with its own normalisation
        backbone = get_factory(cfg.name)(pretrained=cfg.pretrained, weights=cfg.weights, **cfg.params)
        spec = backbone.spec
        if mean is not None and (tuple(mean), tuple(std or ())) != (tuple(spec.mean), tuple(spec.std)):
            log.info("encoder %r: normalising with its own mean/std %s / %s", cfg.name, spec.mean, spec.std)
        return Classifier(backbone, num_classes, mean=spec.mean, std=spec.std, dropout=cfg.dropout)
    backbone = get_factory(cfg.name)(pretrained=cfg.pretrained, **cfg.params)
    kwargs = {k: v for k, v in (("mean", mean), ("std", std)) if v is not None}
    model = Classifier(backbone, num_classes, dropout=cfg.dropout, **kwargs)
    if cfg.weights:
        load_backbone_weights(model, cfg.weights)
    return model


def load_backbone_weights(model: Classifier, path: str | Path) -> None:
    """Load a local checkpoint into the backbone: histoflow's own (backbone only, the head is
    new), or a plain timm/torchvision state dict. Keys that do not fit are listed, not hidden."""
    from histoflow.models.weights import load_torch_file

    path = Path(path)
    blob = load_torch_file(path, what="weights file")
    state: object  # a state dict once checked below
    if isinstance(blob, dict) and "histoflow_version" in blob:
        state = {k[len("backbone.") :]: v for k, v in blob["state_dict"].items() if k.startswith("backbone.")}
    else:
        state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
        target_keys = model.backbone.state_dict().keys()
        # timm/torchvision dicts name keys from the bare model; ours wrap it as `model.`
        if not any(k in target_keys for k in state) and any(f"model.{k}" in target_keys for k in state):
            state = {f"model.{k}": v for k, v in state.items()}
    own = model.backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise CheckpointError(f"{path}: no tensor matches the backbone of this model (wrong architecture?)")
    skipped = sorted(set(state) - set(usable))
    missing = sorted(set(own) - set(usable))
    model.backbone.load_state_dict(usable, strict=False)
    log.info(
        "%s: loaded %d backbone tensors (%d skipped, e.g. a classifier; %d not in file)",
        path,
        len(usable),
        len(skipped),
        len(missing),
    )
    if len(missing) > 0.5 * len(own):
        raise CheckpointError(
            f"{path}: only {len(usable)} of {len(own)} backbone tensors found; wrong architecture? "
            f"e.g. missing {missing[:3]}"
        )


def set_backbone_trainable(model: Classifier, trainable: bool) -> None:
    """Freeze or unfreeze the backbone. BatchNorm statistics freeze with it (eval mode is set
    by the training module), so a frozen backbone is a true fixed feature extractor."""
    for p in model.backbone.parameters():
        p.requires_grad = trainable


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
