"""Colour-space conversions in torch, batched and device-agnostic.

Every function works on PLANAR float tensors `(..., 3, P)` (channel, then pixels), so a batch
of NCHW tiles is a free reshape, and each 3x3 colour matrix is one batched matmul over long
contiguous rows (faster than channel-last `(N, P, 3) @ M`), on CPU or GPU.
They are written here (rather than taken from scikit-image or torchstain) because those work
on one numpy image at a time; tests compare them with scikit-image on the same pixels.

Also the glue between the two image conventions histoflow meets: numpy HxWx3 / NxHxWx3
uint8 (readers, OpenCV) and torch CHW / NCHW uint8 (transforms, datasets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from histoflow.core.errors import DataError

# sRGB (D65) -> CIE XYZ, the matrix of IEC 61966-2-1 (as scikit-image and OpenCV use).
_RGB2XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
_XYZ2RGB = torch.linalg.inv(_RGB2XYZ)
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)

# Ruifrok & Johnston (2001) haematoxylin / eosin / DAB optical-density vectors, the rows of
# scikit-image's `rgb_from_hed`. HED amounts here are plain optical density (natural log), the
# units of scikit-image < 0.19 that Tellez et al. (2018) used for their jitter ranges; newer
# scikit-image divides by -log(1e-6) ~ 13.8, which would make "sigma 0.05" 14x stronger.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
HED_SKIMAGE_SCALE = float(-np.log(1e-6))  # ours / this = scikit-image >= 0.19 `rgb2hed`


def _const(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(device=like.device, dtype=like.dtype)


def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 colour matrix to planar pixels (..., 3, P): one batched matmul."""
    return _const(matrix, x) @ x


def _stack(parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.stack(parts, dim=-2)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> CIELAB (L in [0, 100]), planar (..., 3, P)."""
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = _mix(_RGB2XYZ, lin) / _const(_WHITE_D65, rgb)[:, None]
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-2)
    return _stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB -> sRGB clipped to [0, 1], planar (..., 3, P)."""
    L, a, b = lab.unbind(-2)
    fy = (L + 16.0) / 116.0
    f = _stack((a / 500.0 + fy, fy, fy - b / 200.0))
    xyz = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787) * _const(_WHITE_D65, lab)[:, None]
    lin = _mix(_XYZ2RGB, xyz)
    rgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055, 12.92 * lin)
    return rgb.clamp(0.0, 1.0)


def rgb_to_hed(rgb: torch.Tensor, clip: bool = False) -> torch.Tensor:
    """sRGB in [0, 1] -> HED stain amounts in optical density, planar (..., 3, P).

    scikit-image clips negative stain amounts to 0; we do not by default, so that
    hed_to_rgb(rgb_to_hed(x)) is the identity and a zero-strength jitter changes nothing.
    """
    od = -torch.log(rgb.clamp_min(1e-6))
    hed = _mix(HED_FROM_RGB.T, od)
    return hed.clamp_min(0.0) if clip else hed


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """HED stain amounts (OD) -> sRGB clipped to [0, 1] (scikit-image's `hed2rgb`), planar (..., 3, P)."""
    return torch.exp(-_mix(RGB_FROM_HED.T, hed)).clamp(0.0, 1.0)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> HSV with hue in [0, 1), planar (..., 3, P)."""
    r, g, b = rgb.unbind(-2)
    maxc, _ = rgb.max(-2)
    minc, _ = rgb.min(-2)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(
        maxc == r, ((g - b) / safe) % 6.0, torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)
    )
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return _stack((h, s, maxc))


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV (hue in [0, 1)) -> sRGB in [0, 1], planar (..., 3, P)."""
    h, s, v = hsv.unbind(-2)
    k = _stack(tuple((n + h * 6.0) % 6.0 for n in (5.0, 3.0, 1.0)))
    return v.unsqueeze(-2) - (v * s).unsqueeze(-2) * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


@dataclass
class Pixels:
    """A batch of RGB images as planar float pixels `(N, 3, P)` plus how to give them back."""

    values: torch.Tensor
    kind: str  # "numpy" or "torch"
    shape: tuple[int, ...]  # original shape
    batched: bool

    def restore(self, values: torch.Tensor) -> np.ndarray | torch.Tensor:
        """Planar float pixels in [0, 255] -> uint8 in the caller's layout and type."""
        out = values.round_().clamp_(0, 255).to(torch.uint8)  # in place: values are scratch
        if self.kind == "numpy":
            return out.transpose(1, 2).cpu().numpy().reshape(self.shape)
        return out.reshape(self.shape)


def as_pixels(images, dtype: torch.dtype = torch.float32) -> Pixels:
    """numpy HxWx3 / NxHxWx3 or torch CHW / NCHW uint8 -> planar `Pixels` (float, values 0..255).

    Numpy images are channel-last (readers, OpenCV); tensors channel-first (torchvision).
    Lists of equal-sized images are stacked.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise DataError("no images given")
        if isinstance(images[0], np.ndarray):
            images = np.stack([np.asarray(i) for i in images])
        else:
            images = torch.stack(list(images))
    if isinstance(images, np.ndarray):
        arr = images
        if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
            raise DataError(f"expected an HxWx3 or NxHxWx3 RGB array, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise DataError(f"expected uint8 RGB pixels, got {arr.dtype}")
        n = arr.shape[0] if arr.ndim == 4 else 1
        # a read-only array (e.g. np.asarray of a PIL image) must be copied before torch wraps it
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy()).reshape(n, -1, 3)
        return Pixels(t.transpose(1, 2).contiguous().to(dtype), "numpy", tuple(arr.shape), arr.ndim == 4)
    if isinstance(images, torch.Tensor):
        t = images
        if t.ndim not in (3, 4) or t.shape[-3] != 3:
            raise DataError(f"expected a 3xHxW or Nx3xHxW RGB tensor, got shape {tuple(t.shape)}")
        if t.dtype != torch.uint8:
            raise DataError(f"expected uint8 RGB pixels, got {t.dtype}")
        n = t.shape[0] if t.ndim == 4 else 1
        return Pixels(t.reshape(n, 3, -1).to(dtype), "torch", tuple(t.shape), t.ndim == 4)
    raise DataError(f"expected a numpy array or torch tensor of RGB pixels, got {type(images).__name__}")
