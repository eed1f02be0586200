"""Augmentation of whole uint8 NCHW batches, vectorised, on whatever device the batch is on.

Per-image torchvision colour ops cost milliseconds each on a small CPU, which starves the
model; the same maths on a whole batch costs a small fraction of that per image, and on a GPU it keeps
augmentation off the DataLoader workers. Each image still draws its own random parameters.
Only transforms that vectorise are offered here; the rest stay per-image (augment.where: dataset).
"""

from __future__ import annotations

import torch
from torch import nn

from histoflow.config import AugmentConfig
from histoflow.core.errors import ConfigError

BATCH_CAPABLE = {"dihedral", "hflip", "vflip", "colour_jitter", "hed_jitter", "hsv_jitter"}


def _uniform(n: int, spread: float, device) -> torch.Tensor:
    return 1.0 + (torch.rand(n, device=device) * 2 - 1) * spread


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


class BatchAugment(nn.Module):
    """uint8 NCHW in, float NCHW in [0, 1] out (the model's Preprocess accepts both)."""

    def __init__(self, cfg: AugmentConfig):
        super().__init__()
        used = {k for k, v in cfg.model_dump().items() if v not in (None, False) and k != "where"}
        unsupported = sorted(used - BATCH_CAPABLE)
        if unsupported:
            raise ConfigError(
                f"augment.where: batch supports {sorted(BATCH_CAPABLE)}; {unsupported} need augment.where: dataset"
            )
        self.cfg = cfg
        self.hed = self.hsv = None
        if cfg.hed_jitter is not None:
            from histoflow.preprocess.augment import HedJitter

            self.hed = (HedJitter(cfg.hed_jitter.sigma, cfg.hed_jitter.bias), cfg.hed_jitter.p)
        if cfg.hsv_jitter is not None:
            from histoflow.preprocess.augment import HsvJitter

            h = cfg.hsv_jitter
            self.hsv = (HsvJitter(hue=h.hue, saturation=h.saturation, value=h.value), h.p)

    @staticmethod
    def _some(n: int, p: float, device) -> torch.Tensor:
        return torch.rand(n, device=device) < p

    def _apply_to(self, x: torch.Tensor, module, p: float) -> torch.Tensor:
        chosen = self._some(len(x), p, x.device)
        if chosen.any():
            x = x.clone()
            x[chosen] = module(x[chosen])
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, device = x.shape[0], x.device
        cfg = self.cfg
        if cfg.dihedral:
            # flip half, then rotate by 0/90/180/270: torch.where over whole-batch views is a few
            # cheap uint8 passes, faster than gathering the 8 groups by index
            flip = self._some(n, 0.5, device)[:, None, None, None]
            x = torch.where(flip, x.flip(-1), x)
            k = torch.randint(0, 4, (n,), device=device)[:, None, None, None]
            x = torch.where(
                k == 1,
                torch.rot90(x, 1, dims=(-2, -1)),
                torch.where(k == 2, x.flip(-1).flip(-2), torch.where(k == 3, torch.rot90(x, 3, dims=(-2, -1)), x)),
            )
        if cfg.hflip:
            flip = self._some(n, 0.5, device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if cfg.vflip:
            flip = self._some(n, 0.5, device)
            x = torch.where(flip[:, None, None, None], x.flip(-2), x)
        if self.hed is not None:
            x = self._apply_to(x, *self.hed)
        if self.hsv is not None:
            x = self._apply_to(x, *self.hsv)
        x = x.float().div_(255.0)
        j = cfg.colour_jitter
        if j is not None:
            if j.hue:
                raise ConfigError(
                    "augment.where: batch: colour_jitter.hue is per-image only; use hsv_jitter.hue instead"
                )
            chosen = self._some(n, j.p, device)[:, None, None, None]
            y = x
            if j.brightness:
                y = y * _uniform(n, j.brightness, device)[:, None, None, None]
            if j.contrast:
                mean = _gray(y).mean(dim=(1, 2, 3), keepdim=True)
                y = (y - mean) * _uniform(n, j.contrast, device)[:, None, None, None] + mean
            if j.saturation:
                gray = _gray(y)
                y = (y - gray) * _uniform(n, j.saturation, device)[:, None, None, None] + gray
            x = torch.where(chosen, y.clamp_(0, 1), x)
        return x
