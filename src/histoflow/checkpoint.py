"""histoflow checkpoints: weights plus everything needed to use them.

A checkpoint file holds the architecture (model config), class names, input size, mean/std,
the preprocessing state (stain normaliser, CLAHE), the resolved run config, the resolution of
the tiles it was trained on (when trained on slides), the histoflow version and the format
version. `Checkpoint` answers all of these, so no caller parses the stored dictionary, and
`Checkpoint.model()` rebuilds the network from the file alone: `predict` can never drift from
`train`.
"""

from __future__ import annotations

import hashlib
import logging
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import torch

from histoflow.config.run import ModelConfig
from histoflow.core.errors import CheckpointError
from histoflow.core.io import atomic_path
from histoflow.core.version import __version__
from histoflow.models.classifier import Classifier
from histoflow.models.factory import create_model
from histoflow.models.weights import load_torch_file

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | Path,
    model: Classifier,
    *,
    model_config: dict,
    class_names: list[str],
    image_px: int,
    run_config: dict | None = None,
    preprocess: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write weights + metadata atomically: an interrupted save never leaves a half-written file."""
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
    return _write(path, blob)


def _write(path: str | Path, blob: dict) -> Path:
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return Path(path)


def _read_blob(path: Path) -> dict:
    blob = load_torch_file(path)
    if not isinstance(blob, dict) or "histoflow_version" not in blob:
        raise CheckpointError(
            f"{path}: not a histoflow checkpoint (a bare state dict? use model.weights: {path} "
            f"to start a new model from it)"
        )
    fmt = blob.get("format_version")
    if fmt != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {fmt} (histoflow {blob['histoflow_version']}) cannot be read by "
            f"histoflow {__version__} (format {FORMAT_VERSION})"
        )
    return blob


class Checkpoint:
    """A histoflow checkpoint file, read once: its metadata as attributes, its model on demand."""

    def __init__(self, path: str | Path, blob: dict):
        self.path = Path(path)
        self._blob = blob

    @classmethod
    def read(cls, path: str | Path) -> Checkpoint:
        """Read and check a checkpoint file (missing, unreadable, foreign or too new: CheckpointError)."""
        return cls(path, _read_blob(Path(path)))

    # -- what the model predicts -------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self._blob["class_names"]]

    @property
    def positive_class(self) -> str | None:
        """The class binary figures are about (sensitivity, ROC, heatmaps); None for multi-class.

        Binary models have one logit, for class index 1, so the positive class is always the
        second class name; checkpoints written before it was recorded read the same way."""
        names = self.class_names
        if len(names) != 2:
            return None
        stored = self._blob.get("positive_class")
        if stored is not None and str(stored) != names[1]:
            raise CheckpointError(
                f"{self.path}: positive class {stored!r} is not the second class of {names}: the file is inconsistent"
            )
        return names[1]

    @property
    def num_classes(self) -> int:
        return int(self._blob["num_classes"])

    # -- what the model expects as input -----------------------------------------------------------------
    @property
    def image_px(self) -> int:
        """Side of the images the model was trained on, in pixels."""
        return int(self._blob["image_px"])

    @property
    def tile_px(self) -> int:
        """Side of a slide tile the model reads: the training tiles' size, else the image size."""
        return int(self._blob.get("tile_px") or self._blob["image_px"])

    @property
    def mpp(self) -> float | None:
        """Microns per pixel of the training images, when known (None for patch folders of unknown mpp)."""
        mpp = self._blob.get("mpp")
        return float(mpp) if mpp else None

    @property
    def pixels_version(self) -> int | None:
        """tiling.read.PIXELS_VERSION of the tiles it was trained on (None: not trained on tiles)."""
        version = self._blob.get("pixels_version")
        return int(version) if version is not None else None

    @property
    def mean(self) -> list[float]:
        return list(self._blob["mean"])

    @property
    def std(self) -> list[float]:
        return list(self._blob["std"])

    @property
    def preprocess(self) -> dict:
        """The fitted colour preprocessing state (stain normaliser, CLAHE); {} for none."""
        return dict(self._blob.get("preprocess") or {})

    @property
    def data_config(self) -> dict:
        """The `data:` section of the run that trained it (size policy, crop...)."""
        return dict(self.run_config.get("data") or {})

    # -- provenance ----------------------------------------------------------------------------------
    @property
    def run_config(self) -> dict:
        return dict(self._blob.get("run_config") or {})

    @property
    def model_config(self) -> dict:
        return dict(self._blob["model_config"])

    @property
    def seed(self) -> int:
        return int(self.run_config.get("seed", 0))

    @property
    def epoch(self) -> int | None:
        return self._blob.get("epoch")

    @property
    def temperature(self) -> float | None:
        """Temperature fitted by `calibrate`, applied by `model()`; None when not calibrated."""
        t = self._blob.get("temperature")
        return float(t) if t else None

    @property
    def histoflow_version(self) -> str:
        return str(self._blob["histoflow_version"])

    def get(self, key: str, default: Any = None) -> Any:
        """An extra value saved with `save_checkpoint(extra=...)` (e.g. `epoch`, `val_auc`)."""
        return self._blob.get(key, default)

    @cached_property
    def fingerprint(self) -> str:
        """First 16 hex digits of the file's SHA-1: what embeddings and MIL models record."""
        h = hashlib.sha1()
        with open(self.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]

    def metadata(self) -> dict:
        """Everything but the weights, JSON-friendly (for reports and run records)."""
        meta = {k: v for k, v in self._blob.items() if k != "state_dict"}
        meta["path"] = str(self.path)
        return meta

    # -- the model ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stored weights as trained (no temperature folded in)."""
        return dict(self._blob["state_dict"])

    def model(self, device: str | torch.device = "cpu", apply_temperature: bool = True) -> Classifier:
        """The network in eval mode on `device`, with the calibration temperature folded in
        unless `apply_temperature` is False."""
        cfg = ModelConfig.model_validate({**self.model_config, "pretrained": False, "weights": None})
        model = create_model(cfg, self.num_classes, mean=self.mean, std=self.std)
        try:
            model.load_state_dict(self._blob["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"{self.path}: weights do not fit architecture {cfg.name!r} ({str(exc).splitlines()[0]})"
            ) from exc
        if self.temperature and apply_temperature:
            _fold_temperature(model, self.temperature)
        return model.eval().to(device)

    def with_temperature(self, temperature: float, fitted_on: str = "") -> Checkpoint:
        """Write a fitted temperature into this checkpoint file (atomically) and return it re-read.

        The weights stay as trained; `model()` applies the temperature, so every consumer
        (predict, evaluate, report) sees calibrated probabilities without knowing about it.
        """
        if not (temperature > 0 and temperature < float("inf")):
            raise CheckpointError(f"{self.path}: temperature must be a positive finite number, got {temperature}")
        blob = {**self._blob, "temperature": float(temperature), "temperature_fitted_on": fitted_on}
        _write(self.path, blob)
        return Checkpoint(self.path, blob)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, {self.model_config.get('name')}, classes={self.class_names})"


def _fold_temperature(model: Classifier, temperature: float) -> None:
    # logits / T == (W / T) x + b / T: folding T into the last linear layer keeps the model a
    # plain Classifier, so probabilities() and every caller need no change
    linear = cast(torch.nn.Linear, model.head[-1])
    with torch.no_grad():
        linear.weight.div_(temperature)
        if linear.bias is not None:
            linear.bias.div_(temperature)


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", apply_temperature: bool = True
) -> tuple[Classifier, Checkpoint]:
    """(model in eval mode, its Checkpoint) from a checkpoint file."""
    ckpt = Checkpoint.read(path)
    return ckpt.model(device, apply_temperature=apply_temperature), ckpt
