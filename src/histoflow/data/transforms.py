"""Augmentation policies named in YAML, built from torchvision.transforms.v2.

Each transform takes and returns a uint8 CHW tensor; randomness comes from torch's generator,
which Lightning seeds per worker, so a run is reproducible. Stain (HED) jitter lives in
histoflow.preprocess and is plugged in here when configured.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from histoflow.config import AugmentConfig


class RandomDihedral(torch.nn.Module):
    """One of the 8 symmetries of a square (rot90 x flip), uniformly: tissue has no 'up'."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, 8, ()).item())
        if k >= 4:
            img = img.flip(-1)
        return torch.rot90(img, k % 4, dims=(-2, -1)) if k % 4 else img


def dihedral_views(batch: torch.Tensor) -> list[torch.Tensor]:
    """All 8 dihedral views of an NCHW batch (test-time augmentation)."""
    views: list[torch.Tensor] = []
    for flip in (False, True):
        b = batch.flip(-1) if flip else batch
        views.extend(torch.rot90(b, k, dims=(-2, -1)) for k in range(4))
    return views


def build_transform(cfg: AugmentConfig, image_px: int) -> v2.Compose | None:
    """The per-image training augmentation of a policy; None when it is empty or runs on
    batches (augment.where: batch, see histoflow.data.batch_augment)."""
    if cfg.where == "batch":
        return None
    steps: list[torch.nn.Module] = []
    if cfg.random_resized_crop is not None:
        c = cfg.random_resized_crop
        steps.append(v2.RandomResizedCrop(image_px, scale=tuple(c.scale), ratio=tuple(c.ratio), antialias=True))
    if cfg.affine is not None:
        a = cfg.affine
        affine = v2.RandomAffine(
            degrees=a.degrees,
            scale=tuple(a.scale),
            shear=a.shear or None,
            translate=(a.translate, a.translate) if a.translate else None,
            fill=255,
        )
        steps.append(v2.RandomApply([affine], p=a.p) if a.p < 1 else affine)
    if cfg.dihedral:
        steps.append(RandomDihedral())
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if cfg.vflip:
        steps.append(v2.RandomVerticalFlip())
    if cfg.colour_jitter is not None:
        j = cfg.colour_jitter
        jitter = v2.ColorJitter(
            brightness=j.brightness or None,
            contrast=j.contrast or None,
            saturation=j.saturation or None,
            hue=j.hue or None,
        )
        steps.append(v2.RandomApply([jitter], p=j.p) if j.p < 1 else jitter)
    if cfg.hed_jitter is not None:
        from histoflow.preprocess.augment import HedJitter

        h = cfg.hed_jitter
        steps.append(v2.RandomApply([HedJitter(sigma=h.sigma, bias=h.bias)], p=h.p))
    if cfg.hsv_jitter is not None:
        from histoflow.preprocess.augment import HsvJitter

        hsv = cfg.hsv_jitter
        steps.append(v2.RandomApply([HsvJitter(hue=hsv.hue, saturation=hsv.saturation, value=hsv.value)], p=hsv.p))
    if cfg.gaussian_blur is not None:
        b = cfg.gaussian_blur
        k = b.kernel_px if b.kernel_px % 2 else b.kernel_px + 1
        steps.append(v2.RandomApply([v2.GaussianBlur(k, sigma=tuple(b.sigma))], p=b.p))
    return v2.Compose(steps) if steps else None
