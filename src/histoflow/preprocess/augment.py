"""Stain augmentation for training: HED jitter (Tellez et al. 2018) and HSV jitter.

Both are torch modules taking a uint8 CHW tensor (or an NCHW batch, each image drawing its own
perturbation) and returning uint8 of the same shape, so they slot into torchvision v2 pipelines.
Randomness comes from torch's generator (Lightning seeds it per worker) or from an explicit
`generator`, so a seeded run is reproducible.
"""

from __future__ import annotations

import torch

from histoflow.core.errors import ConfigError, DataError
from histoflow.preprocess.colour import hed_to_rgb, hsv_to_rgb, rgb_to_hed, rgb_to_hsv


def _check_uint8_rgb(img: torch.Tensor, who: str) -> None:
    if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.ndim not in (3, 4) or img.shape[-3] != 3:
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        dtype = getattr(img, "dtype", None)
        raise DataError(f"{who} expects a uint8 3xHxW or Nx3xHxW tensor, got {shape} {dtype}")


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator) -> torch.Tensor:
    u = torch.rand((n, 3), generator=generator, dtype=torch.float32)
    return (low + (high - low) * u).to(like.device)


def _non_negative(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0:  # also catches NaN
        raise ConfigError(f"{name} must be >= 0, got {value}")
    return value


class HedJitter(torch.nn.Module):
    """Per stain (haematoxylin, eosin, DAB): hed' = hed * U(1-sigma, 1+sigma) + U(-bias, bias).

    HED is Ruifrok & Johnston's colour deconvolution (scikit-image's matrix) in optical-density
    units, the units Tellez et al. set their ranges in ("HED-light": sigma = bias = 0.05).
    With both zero the image comes back unchanged (up to rounding).
    """

    def __init__(self, sigma: float = 0.05, bias: float = 0.05, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.sigma = _non_negative("hed_jitter.sigma", sigma)
        self.bias = _non_negative("hed_jitter.bias", bias)
        self.generator = generator

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        _check_uint8_rgb(img, "HedJitter")
        batch = img if img.ndim == 4 else img[None]
        n = batch.shape[0]
        rgb = batch.reshape(n, 3, -1).to(torch.float32) / 255.0
        scale = _uniform(n, 1.0 - self.sigma, 1.0 + self.sigma, rgb, self.generator)
        shift = _uniform(n, -self.bias, self.bias, rgb, self.generator)
        hed = rgb_to_hed(rgb) * scale[:, :, None] + shift[:, :, None]
        out = (hed_to_rgb(hed) * 255.0).round().to(torch.uint8).reshape(batch.shape)
        return out if img.ndim == 4 else out[0]

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, bias={self.bias}"


class HsvJitter(torch.nn.Module):
    """Hue shift by U(-hue, hue) of the colour circle; saturation and value scaled by U(1-x, 1+x).

    Unlike torchvision's ColorJitter (saturation blends with grey, brightness scales RGB),
    this perturbs the HSV coordinates directly, as in Tellez et al.'s HSV augmentation.
    """

    def __init__(
        self, hue: float = 0.05, saturation: float = 0.1, value: float = 0.0, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.hue = _non_negative("hsv_jitter.hue", hue)
        if self.hue > 0.5:
            raise ConfigError(f"hsv_jitter.hue is a fraction of the colour circle and must be <= 0.5, got {hue}")
        self.saturation = _non_negative("hsv_jitter.saturation", saturation)
        self.value = _non_negative("hsv_jitter.value", value)
        self.generator = generator

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        _check_uint8_rgb(img, "HsvJitter")
        batch = img if img.ndim == 4 else img[None]
        n = batch.shape[0]
        hsv = rgb_to_hsv(batch.reshape(n, 3, -1).to(torch.float32) / 255.0)
        low = torch.tensor([-self.hue, 1.0 - self.saturation, 1.0 - self.value])
        high = torch.tensor([self.hue, 1.0 + self.saturation, 1.0 + self.value])
        u = torch.rand((n, 3), generator=self.generator)
        draw = (low + (high - low) * u).to(hsv.device)[:, :, None]
        h = (hsv[:, 0] + draw[:, 0]) % 1.0
        s = (hsv[:, 1] * draw[:, 1]).clamp(0.0, 1.0)
        v = (hsv[:, 2] * draw[:, 2]).clamp(0.0, 1.0)
        rgb = hsv_to_rgb(torch.stack((h, s, v), 1))
        out = (rgb * 255.0).round().clamp(0, 255).to(torch.uint8).reshape(batch.shape)
        return out if img.ndim == 4 else out[0]

    def extra_repr(self) -> str:
        return f"hue={self.hue}, saturation={self.saturation}, value={self.value}"
