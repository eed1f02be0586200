"""histoflow checkpoints: weights plus everything needed to use them.

A checkpoint holds the architecture (model config), class names, input size, mean/std (inside
the weights, as Preprocess buffers), the preprocessing state (stain normaliser, CLAHE), the
resolved run config, the histoflow version and the format version. `load_checkpoint` rebuilds
the model from it alone, so `predict` can never drift from `train`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from histoflow.core.version import __version__
from histoflow.core.errors import CheckpointError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, model, *, model_config: dict, class_names: list[str], image_px: int,
                    run_config: dict | None = None, preprocess: dict | None = None, extra: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "histoflow_version": __version__,
        "format_version": FORMAT_VERSION,
        "model_config": model_config,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "image_px": image_px,
        "mean": model.preprocess.mean.flatten().tolist(),
        "std": model.preprocess.std.flatten().tolist(),
        "preprocess": preprocess or {},
        "run_config": run_config or {},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint
    return path


def load_file(path: str | Path, what: str = "checkpoint") -> object:
    """torch.load on CPU with errors that name the file: missing, or not a readable checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling error means an unusable file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    blob = load_file(path)
    if not isinstance(blob, dict) or "histoflow_version" not in blob:
        raise CheckpointError(f"{path}: not a histoflow checkpoint (a bare state dict? use model.weights: {path} "
                              f"to start a new model from it)")
    fmt = blob.get("format_version")
    if fmt != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {fmt} (histoflow {blob['histoflow_version']}) cannot be read by "
                              f"histoflow {__version__} (format {FORMAT_VERSION})")
    return blob


def store_temperature(path: str | Path, temperature: float, fitted_on: str = "") -> Path:
    """Write a fitted temperature into an existing checkpoint (atomically: temp file, then rename).

    The weights stay as trained; `load_checkpoint` applies the temperature, so every consumer
    (predict, evaluate, report) sees calibrated probabilities without knowing about it.
    """
    path = Path(path)
    if not (temperature > 0 and temperature < float("inf")):
        raise CheckpointError(f"{path}: temperature must be a positive finite number, got {temperature}")
    blob = read_checkpoint(path)
    blob["temperature"] = float(temperature)
    blob["temperature_fitted_on"] = fitted_on
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def _apply_temperature(model, temperature: float) -> None:
    # logits / T == (W / T) x + b / T: folding T into the last linear layer keeps the model a
    # plain Classifier, so probabilities() and every caller need no change
    linear = model.head[-1]
    with torch.no_grad():
        linear.weight.div_(temperature)
        if linear.bias is not None:
            linear.bias.div_(temperature)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", apply_temperature: bool = True):
    """(model in eval mode, checkpoint metadata) from a histoflow checkpoint.

    A temperature stored by `store_temperature` is applied unless `apply_temperature` is False
    (meta["temperature"] says which one, or None).
    """
    from histoflow.config import ModelConfig
    from histoflow.models.factory import create_model

    blob = read_checkpoint(path)
    cfg = ModelConfig.model_validate({**blob["model_config"], "pretrained": False, "weights": None})
    model = create_model(cfg, blob["num_classes"], mean=blob["mean"], std=blob["std"])
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit architecture {cfg.name!r} ({str(exc).splitlines()[0]})") from exc
    temperature = blob.get("temperature")
    if temperature and apply_temperature:
        _apply_temperature(model, float(temperature))
    model.eval().to(device)
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    meta["temperature"] = float(temperature) if temperature and apply_temperature else None
    meta["path"] = str(path)
    return model, meta
