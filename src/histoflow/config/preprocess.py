"""YAML models of the colour layer: `preprocess:` (normalisation, CLAHE) and stain augmentation.

`PreprocessConfig` is applied identically by train, evaluate, predict and predict-slide
(`build_preprocessor`); `HsvJitter` is a training-only augmentation (`augment.hsv_jitter`).
The HED jitter model already lives in histoflow.config (`augment.hed_jitter`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator

from histoflow.config.base import Strict


class ClaheConfig(Strict):
    """CLAHE: `lab` equalises lightness only (keeps stain hues); `rgb` each channel."""

    clip_limit: PositiveFloat = 2.0
    grid: PositiveInt = 8  # tiles per side of the equalisation grid
    mode: Literal["lab", "rgb"] = "lab"


class PreprocessConfig(Strict):
    """Colour preprocessing applied before augmentation, at training and prediction alike.

    `target`: an image, or a folder of images (pixels pooled), to normalise to. Macenko
    without a target uses Macenko's reference H&E matrix; Reinhard needs a target.
    Vahadane is not offered (see histoflow.preprocess.stain for why).
    """

    stain_norm: Literal["none", "reinhard", "macenko"] = "none"
    target: str | None = None
    # Macenko: the uint8 brightness of empty glass; lower it (~215) for scans with dark glass (BreakHis),
    # or `auto`: estimated per image (and from the target), empty fields left unchanged. The default
    # stays 240: configs and checkpoints keep their numbers, and on evenly lit glass auto leaves a faint tint
    io: Annotated[float, Field(gt=1, le=255)] | Literal["auto"] = 240.0
    clahe: ClaheConfig | None = None

    @field_validator("stain_norm", mode="before")
    @classmethod
    def _explain_vahadane(cls, v: object) -> object:
        if isinstance(v, str) and v.lower() == "vahadane":
            raise ValueError(
                "vahadane is not offered (non-deterministic sparse dictionary learning, "
                "slow); use macenko, which falls back to the reference matrix on hard tiles"
            )
        return v


class HsvJitter(Strict):
    """HSV augmentation: hue shifted by U(-hue, hue) of the circle; saturation/value scaled by U(1-x, 1+x)."""

    hue: Annotated[float, Field(ge=0, le=0.5)] = 0.05  # a fraction of the colour circle
    saturation: NonNegativeFloat = 0.1
    value: NonNegativeFloat = 0.0
    p: Annotated[float, Field(ge=0, le=1)] = 1.0
