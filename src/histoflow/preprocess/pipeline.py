"""`build_preprocessor`: the one colour step train, evaluate, predict and predict-slide share.

Training builds it from the config (reading and fitting the target once) and stores
`state_dict()` in the checkpoint; prediction rebuilds it with `Preprocessor.from_state`
without touching the target file, so both normalise identically even if the file moved.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from histoflow.config.preprocess import ClaheConfig, PreprocessConfig
from histoflow.core.errors import ConfigError, DataError
from histoflow.preprocess.clahe import clahe
from histoflow.preprocess.stain import StainNormalizer, make_normalizer

log = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_TARGET_IMAGES = 64  # a folder target is pooled; more images add time, not information


class Preprocessor:
    """HxWx3 uint8 -> HxWx3 uint8: stain normalisation, then CLAHE; either may be absent."""

    def __init__(self, normalizer: StainNormalizer | None = None, clahe_cfg: ClaheConfig | None = None) -> None:
        self.normalizer = normalizer
        self.clahe = clahe_cfg

    @property
    def is_identity(self) -> bool:
        return self.normalizer is None and self.clahe is None

    @property
    def fallbacks(self) -> int:
        return self.normalizer.fallbacks if self.normalizer is not None else 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.ndim != 3:
            raise DataError(f"preprocessor expects one HxWx3 uint8 image, got {getattr(image, 'shape', type(image))}")
        return self.batch(image[None])[0]

    def batch(self, images):
        """A batch at once (NxHxWx3 numpy or Nx3xHxW torch uint8): normalisation runs batched."""
        out = self.normalizer.transform(images) if self.normalizer is not None else images
        if self.clahe is None:
            return out
        c = self.clahe
        if isinstance(out, torch.Tensor):
            arrays = out.permute(0, 2, 3, 1).cpu().numpy()
            done = np.stack([clahe(a, c.clip_limit, c.grid, c.mode) for a in arrays])
            return torch.from_numpy(done).permute(0, 3, 1, 2).contiguous().to(out.device)
        return np.stack([clahe(a, c.clip_limit, c.grid, c.mode) for a in out])

    def state_dict(self) -> dict[str, Any]:
        """Plain lists/floats/strings: safe in a checkpoint and in JSON."""
        return {
            "version": STATE_VERSION,
            "stain_norm": self.normalizer.method if self.normalizer is not None else "none",
            "normalizer": self.normalizer.state_dict() if self.normalizer is not None else None,
            "clahe": self.clahe.model_dump() if self.clahe is not None else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Preprocessor:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            found = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise ConfigError(f"preprocessor state: expected version {STATE_VERSION}, got {found!r}")
        normalizer = StainNormalizer.from_state(state["normalizer"]) if state.get("normalizer") else None
        try:
            clahe_cfg = ClaheConfig.model_validate(state["clahe"]) if state.get("clahe") else None
        except ValidationError as exc:
            raise ConfigError(f"preprocessor state: invalid clahe ({exc.errors()[0]['msg']})") from None
        return cls(normalizer, clahe_cfg)


def target_images(target: str | Path) -> tuple[list[np.ndarray], list[Path]]:
    """Read a target image, or the images of a target folder (sorted, at most MAX_TARGET_IMAGES)."""
    from histoflow.core.images import is_image_file, read_image
    from histoflow.core.paths import expand

    path = expand(target)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise DataError(f"preprocess.target: folder {path} holds no images")
        if len(files) > MAX_TARGET_IMAGES:
            log.info("preprocess.target: using the first %d of %d images in %s", MAX_TARGET_IMAGES, len(files), path)
            files = files[:MAX_TARGET_IMAGES]
    elif path.exists():
        files = [path]
    else:
        raise DataError(f"preprocess.target: {path} not found")
    return [read_image(f) for f in files], files


def build_preprocessor(cfg: PreprocessConfig | dict | None) -> Preprocessor:
    """Fit the configured preprocessing (reads `target` once); see `Preprocessor.from_state`."""
    if cfg is None:
        cfg = PreprocessConfig()
    elif isinstance(cfg, dict):
        try:
            cfg = PreprocessConfig.model_validate(cfg)
        except ValidationError as exc:
            lines = [f"  preprocess.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            raise ConfigError("invalid preprocess config:\n" + "\n".join(lines)) from None
    normalizer = None
    if cfg.stain_norm != "none":
        normalizer = make_normalizer(cfg.stain_norm, **({"io": cfg.io} if cfg.stain_norm == "macenko" else {}))
        if cfg.target is not None:
            images, files = target_images(cfg.target)
            try:
                normalizer.fit(images)
            except DataError as exc:
                raise DataError(f"preprocess.target {cfg.target}: {exc}") from None
            log.info("%s normaliser fitted on %d target image(s) from %s", cfg.stain_norm, len(files), cfg.target)
        elif cfg.stain_norm == "reinhard":
            raise ConfigError("preprocess.target: Reinhard normalisation needs a target image or folder")
        else:
            log.info("Macenko normaliser without a target: using Macenko's reference H&E matrix")
    return Preprocessor(normalizer, cfg.clahe)
