"""YAML models of the colour layer: `preprocess:` (normalisation, CLAHE) and stain augmentation.

`PreprocessConfig` is applied identically by train, evaluate, predict and predict-slide
(`build_preprocessor`); `HsvJitter` is a training-only augmentation (`augment.hsv_jitter`).
The HED jitter model already lives in histoflow.config (`augment.hed_jitter`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from histoflow.config.base import Strict


class ClaheConfig(Strict):
    """CLAHE: `lab` equalises lightness only (keeps stain hues); `rgb` each channel."""
    clip_limit: float = 2.0
    grid: int = 8             # tiles per side of the equalisation grid
    mode: Literal["lab", "rgb"] = "lab"

    @field_validator("clip_limit")
    @classmethod
    def _positive_clip(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("grid")
    @classmethod
    def _positive_grid(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v


class PreprocessConfig(Strict):
    """Colour preprocessing applied before augmentation, at training and prediction alike.

    `target`: an image, or a folder of images (pixels pooled), to normalise to. Macenko
    without a target uses Macenko's reference H&E matrix; Reinhard needs a target.
    Vahadane is not offered (see histoflow.preprocess.stain for why).
    """
    stain_norm: Literal["none", "reinhard", "macenko"] = "none"
    target: str | None = None
    io: float = 240.0         # Macenko: brightness of glass; lower it (~215) for scans with dark glass (BreakHis)
    clahe: ClaheConfig | None = None

    @field_validator("io")
    @classmethod
    def _io_range(cls, v: float) -> float:
        if not 1 < v <= 255:
            raise ValueError("must be in (1, 255] (the uint8 brightness of empty glass)")
        return v

    @field_validator("stain_norm", mode="before")
    @classmethod
    def _explain_vahadane(cls, v: object) -> object:
        if isinstance(v, str) and v.lower() == "vahadane":
            raise ValueError("vahadane is not offered (non-deterministic sparse dictionary learning, "
                             "slow); use macenko, which falls back to the reference matrix on hard tiles")
        return v


class HsvJitter(Strict):
    """HSV augmentation: hue shifted by U(-hue, hue) of the circle; saturation/value scaled by U(1-x, 1+x)."""
    hue: float = 0.05
    saturation: float = 0.1
    value: float = 0.0
    p: float = 1.0

    @field_validator("hue")
    @classmethod
    def _hue_range(cls, v: float) -> float:
        if not 0 <= v <= 0.5:
            raise ValueError("must be in [0, 0.5] (a fraction of the colour circle)")
        return v

    @field_validator("saturation", "value")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if not v >= 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("p")
    @classmethod
    def _probability(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError("must be in [0, 1]")
        return v
