"""histoflow.preprocess: colour — stain normalisation, stain augmentation, CLAHE.

Heavy work is batched torch (CPU or GPU); CLAHE runs OpenCV on the CPU. Names load lazily, so
importing the package for one name does not pull in torch and OpenCV. The config schemas live
in `histoflow.config.preprocess` and are re-exported here for convenience.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "HedJitter": "augment",
    "HsvJitter": "augment",
    "Clahe": "clahe",
    "apply_clahe": "clahe",  # not `clahe`: that name is the submodule
    "ClaheConfig": "histoflow.config.preprocess",
    "PreprocessConfig": "histoflow.config.preprocess",
    "Preprocessor": "pipeline",
    "build_preprocessor": "pipeline",
    "MacenkoNormalizer": "stain",
    "ReinhardNormalizer": "stain",
    "StainNormalizer": "stain",
    "make_normalizer": "stain",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'histoflow.preprocess' has no attribute {name!r}")
    full = module if "." in module else f"histoflow.preprocess.{module}"
    value = getattr(importlib.import_module(full), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
