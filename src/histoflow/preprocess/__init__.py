"""histoflow.preprocess: colour — stain normalisation, stain augmentation, CLAHE.

Heavy work is batched torch (CPU or GPU); CLAHE runs OpenCV on the CPU.
"""

from histoflow.preprocess.augment import HedJitter, HsvJitter
from histoflow.preprocess.clahe import Clahe, clahe
from histoflow.preprocess.config import ClaheConfig, PreprocessConfig
from histoflow.preprocess.pipeline import Preprocessor, build_preprocessor
from histoflow.preprocess.stain import (
    MacenkoNormalizer,
    ReinhardNormalizer,
    StainNormalizer,
    make_normalizer,
)

__all__ = [
    "HedJitter", "HsvJitter", "Clahe", "clahe", "ClaheConfig", "PreprocessConfig", "Preprocessor",
    "build_preprocessor", "MacenkoNormalizer", "ReinhardNormalizer", "StainNormalizer", "make_normalizer",
]
