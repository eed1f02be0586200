"""histoflow.preprocess: colour — stain normalisation, stain augmentation, CLAHE.

Heavy work is batched torch (CPU or GPU); CLAHE runs OpenCV on the CPU. Names load lazily
so that `histoflow.config` can import `histoflow.config.preprocess` (pydantic only) without
pulling in torch and OpenCV.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "HedJitter": "augment", "HsvJitter": "augment",
    "Clahe": "clahe", "apply_clahe": "clahe",  # not `clahe`: that name is the submodule
    "ClaheConfig": "config", "PreprocessConfig": "config",
    "Preprocessor": "pipeline", "build_preprocessor": "pipeline",
    "MacenkoNormalizer": "stain", "ReinhardNormalizer": "stain", "StainNormalizer": "stain",
    "make_normalizer": "stain",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'histoflow.preprocess' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"histoflow.preprocess.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
