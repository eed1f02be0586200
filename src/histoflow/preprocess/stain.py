"""Stain normalisation: Reinhard (LAB statistics) and Macenko (optical-density eigenvectors).

Why hand-written rather than torchstain: torchstain fits and normalises one image at a time
(boolean-indexed pixels, a full `lstsq`, `kthvalue` per percentile), and its Macenko raises
`LinAlgError`/returns NaN on tiles that are mostly glass or carry a single stain. Here a whole
batch goes through each step at once (OD conversion, masked covariance, batched `eigh`, `topk`
percentiles with a per-image rank), on whatever device the input lives on, and a tile whose
stain matrix cannot be estimated falls back to the reference matrix and is counted
(`fallbacks`), never raising. The arithmetic follows torchstain's (itself a port of
Macenko's reference code) so results agree with it; tests check that.

Vahadane is not offered: its stain matrix comes from sparse dictionary learning (SPAMS),
whose result depends on the solver's random start and lasso path, so the same tile can get a
different matrix from run to run (and train and predict could disagree), and it is one to two
orders of magnitude slower than Macenko. Macenko with a reference fallback gives the same
kind of output (a 3x2 stain matrix plus concentration scales) deterministically.

Fitted state is plain lists and floats (`state_dict()` / `from_state()`), so a checkpoint
stores it and prediction normalises exactly as training did.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, cast

import torch

from histoflow.core.errors import ConfigError, DataError
from histoflow.preprocess.augment import HedJitter, HsvJitter  # noqa: F401  (public here too)
from histoflow.preprocess.colour import as_pixels, lab_to_rgb, rgb_to_lab

log = logging.getLogger(__name__)

# Macenko's reference H&E matrix and 99th-percentile concentrations (columns: H, E), as in
# his original code and torchstain: the target when none is fitted, and the fallback.
REFERENCE_STAIN_MATRIX = ((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581))
REFERENCE_MAX_CONC = (1.9705, 1.0308)


def masked_percentile(
    values: torch.Tensor, mask: torch.Tensor, q: float, n: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row q-th percentile (0..100) of `values[mask]` over the last dim, nearest rank like
    torchstain's; `mask` broadcasts against `values`, `n` (its row counts) may be given.

    Rows have different numbers of valid entries, so one `kthvalue` cannot serve them all;
    `topk` with the largest rank needed, then a gather at each row's own rank, can (and it
    only partially sorts). Rows without a valid entry give NaN.
    """
    if n is None:
        n = mask.expand_as(values).sum(-1)
    n = n.expand(values.shape[:-1])
    k = 1 + torch.round(q / 100.0 * (n - 1).clamp_min(0).to(values.dtype)).long()  # 1-based, ascending
    from_top = q >= 50
    rank = (n - k + 1) if from_top else k
    filled = values if bool(mask.all()) else values.masked_fill(~mask, float("-inf") if from_top else float("inf"))
    kmax = int(rank.max().clamp_min(1).item())
    top = torch.topk(filled, kmax, dim=-1, largest=from_top, sorted=True).values
    out = top.gather(-1, (rank.clamp_min(1) - 1)[..., None])[..., 0]
    return torch.where(n > 0, out, torch.full_like(out, float("nan")))


class StainNormalizer:
    """Common interface: fit on target image(s), transform batches, save/restore state."""

    method: ClassVar[str] = ""
    chunk_images: int = 64  # images per internal batch: bounds memory on large batches

    def __init__(self) -> None:
        self.fallbacks = 0  # images whose own statistics could not be used (see subclass)
        self.images_seen = 0
        self.last_fallbacks: list[bool] = []  # per image of the last transform(): which fell back

    # -- public API -------------------------------------------------------------------------
    def fit(self, target) -> StainNormalizer:
        """Fit to one image, a batch, or a list of images (of any sizes): their pixels pooled."""
        values = _pooled_pixels(target)
        self._fit(values)
        return self

    def transform(self, images):
        """Normalise numpy HxWx3/NxHxWx3 or torch CHW/NCHW uint8; same type and layout out."""
        pix = as_pixels(images)
        if isinstance(images, torch.Tensor):
            pix.values = pix.values.to(images.device)
        self.last_fallbacks = []
        outs = [self._transform(chunk) for chunk in pix.values.split(self.chunk_images)]
        self.images_seen += pix.values.shape[0]
        return pix.restore(torch.cat(outs) if len(outs) > 1 else outs[0])

    __call__ = transform

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StainNormalizer:
        """Rebuild a fitted normaliser from `state_dict()` (of any method)."""
        method = state.get("method") if isinstance(state, dict) else None
        klass = NORMALIZERS.get(method) if method is not None else None
        if klass is None:
            raise ConfigError(
                f"stain normaliser state: unknown method {method!r} (expected one of {sorted(NORMALIZERS)})"
            )
        if cls is not StainNormalizer and klass is not cls:
            raise ConfigError(f"stain normaliser state is for {method!r}, not {cls.method!r}")
        return klass._from_state(state)

    # -- subclass hooks -----------------------------------------------------------------------
    def _fit(self, values: torch.Tensor) -> None:
        raise NotImplementedError

    def _transform(self, values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> StainNormalizer:
        raise NotImplementedError


def _pooled_pixels(target) -> torch.Tensor:
    """Target image(s) -> planar float pixels (1, 3, P) on CPU, pooling images of any sizes."""
    items = target if isinstance(target, (list, tuple)) else [target]
    if not items:
        raise DataError("stain normaliser fit: no target image given")
    parts = [as_pixels(item).values.cpu() for item in items]
    return torch.cat([p.transpose(0, 1).reshape(3, -1) for p in parts], dim=-1)[None]


def _state_float(state: dict, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    try:
        value = torch.tensor(state[key], dtype=torch.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"stain normaliser state: field {key!r} missing or not numeric ({exc})") from None
    if tuple(value.shape) != shape or not torch.isfinite(value).all():
        raise ConfigError(
            f"stain normaliser state: field {key!r} must be finite with shape {list(shape)}, got {value.tolist()}"
        )
    return value


IO_AUTO_MIN, IO_AUTO_MAX = 200.0, 255.0  # bounds of an estimated glass brightness
IO_PERCENTILE = 99.0  # glass brightness: this percentile of each channel
GLASS_OD = 0.15  # a pixel is tissue when some channel's OD (to the image's glass) exceeds this


def glass_brightness(values: torch.Tensor) -> torch.Tensor:
    """(N, 3) uint8-scale brightness of each image's glass per channel, from planar pixels
    (N, 3, P): the IO_PERCENTILE-th percentile of each channel, clipped to [IO_AUTO_MIN, IO_AUTO_MAX].

    Scanners differ: most put glass near 240-250, BreakHis near 205-215 and often tinted (green-
    grey); per channel, tinted glass has no optical density and is not mistaken for stain. A
    tile of dense tissue with no glass reads its brightest tissue instead; the lower bound keeps
    that from turning pale tissue into background."""
    everything = torch.ones((1, 1, 1), dtype=torch.bool, device=values.device)
    return masked_percentile(values, everything, IO_PERCENTILE).clamp(IO_AUTO_MIN, IO_AUTO_MAX)


def tissue_fraction(values: torch.Tensor) -> torch.Tensor:
    """(N,) share of each image's pixels (N, 3, P) that are not glass: some channel's optical
    density, relative to the image's own glass, at least GLASS_OD."""
    io = glass_brightness(values)[:, :, None]
    od = -torch.log((values + 1.0) / io)
    return (od.amax(1) >= GLASS_OD).float().mean(-1)


class ReinhardNormalizer(StainNormalizer):
    """Reinhard et al. (2001): match each image's per-channel LAB mean and std to the target's.

    A flat image (L std below `min_std`) or one with almost no tissue (fewer than
    `min_tissue_fraction` of its pixels darker or more coloured than glass: an empty field, whose
    L std is the scanner's noise and vignetting) is returned unchanged and counted in
    `fallbacks`: stretching its noise to the target's contrast, or painting it the target's
    mean colour, would invent tissue.
    """

    method = "reinhard"

    def __init__(
        self, target_mean=None, target_std=None, min_std: float = 0.5, min_tissue_fraction: float = 0.05
    ) -> None:
        super().__init__()
        self.min_std = float(min_std)
        self.min_tissue_fraction = float(min_tissue_fraction)
        self.target_mean = None if target_mean is None else torch.as_tensor(target_mean, dtype=torch.float32).clone()
        self.target_std = None if target_std is None else torch.as_tensor(target_std, dtype=torch.float32).clone()

    def _fit(self, values: torch.Tensor) -> None:
        lab = rgb_to_lab(values[0] / 255.0)
        std = lab.std(-1, unbiased=False)
        if float(std[0]) < self.min_std:
            raise DataError("Reinhard target is flat (no contrast in L): choose a target image with tissue")
        self.target_mean, self.target_std = lab.mean(-1), std

    def _transform(self, values: torch.Tensor) -> torch.Tensor:
        if self.target_mean is None:
            raise ConfigError("Reinhard normaliser is not fitted: call fit(target) or set preprocess.target")
        lab = rgb_to_lab(values / 255.0)
        std, mean = torch.std_mean(lab, dim=-1, unbiased=False, keepdim=True)
        t_mean = self.target_mean.to(lab.device)[:, None]
        t_std = cast(torch.Tensor, self.target_std).to(lab.device)[:, None]  # fitted with target_mean
        out = (lab - mean) / std.clamp_min(self.min_std) * t_std + t_mean
        rgb = lab_to_rgb(out) * 255.0
        flat = (std[:, 0, 0] < self.min_std) | (tissue_fraction(values) < self.min_tissue_fraction)
        self.last_fallbacks += flat.tolist()
        if bool(flat.any()):
            self.fallbacks += int(flat.sum())
            rgb = torch.where(flat[:, None, None], values, rgb)
        return rgb

    def state_dict(self) -> dict[str, Any]:
        if self.target_mean is None:
            raise ConfigError("Reinhard normaliser is not fitted: nothing to save")
        return {
            "method": self.method,
            "target_mean": self.target_mean.tolist(),
            "target_std": cast(torch.Tensor, self.target_std).tolist(),  # fitted with target_mean
            "min_std": self.min_std,
            "min_tissue_fraction": self.min_tissue_fraction,
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> ReinhardNormalizer:
        # states saved before min_tissue_fraction existed keep their behaviour (0: flatness only)
        return cls(
            _state_float(state, "target_mean", (3,)),
            _state_float(state, "target_std", (3,)),
            min_std=float(state.get("min_std", 0.5)),
            min_tissue_fraction=float(state.get("min_tissue_fraction", 0.0)),
        )


class MacenkoNormalizer(StainNormalizer):
    """Macenko et al. (2009): stain vectors from the optical-density plane of the tissue pixels.

    Parameters follow torchstain: `io` transmitted light, `alpha` angular percentile,
    `beta` OD threshold below which a pixel counts as background. An image falls back to the
    target (reference) stain matrix when fewer than `min_tissue_fraction` of its pixels are
    tissue, when the estimate is not finite, when a stain vector has clearly negative OD, or
    when the two vectors are nearly parallel (a single-stain tile), or when the tissue OD hardly
    varies (std along its main axis below `min_od_std`: blank glass, blur); each is counted.
    Concentration scales are floored at `min_conc_fraction` of the target's so a tile with
    almost no eosin does not get its noise multiplied a hundredfold; a fallback tile keeps its
    own concentrations (it is re-coloured with the target matrix, not rescaled).
    `sample_px`: the stain matrix and concentration percentiles are estimated from a regular
    subsample of at most this many pixels per image (None: all, exactly as torchstain); every
    pixel is still normalised. On 256 px tiles this halves the time and moves outputs by
    about half a level on average (tests state the tolerance).
    `io` is the brightness of glass: 240 (torchstain's default) suits most scanners; scans with
    darker glass (BreakHis is ~205-215) need a lower value, else their glass counts as tissue
    and turns purple. `io="auto"` estimates it per image (`glass_brightness`), and from the target
    when fitted: each image's optical density is taken against its own glass, and the output
    glass is the target's (240 without a target).
    """

    method = "macenko"

    def __init__(
        self,
        stain_matrix=REFERENCE_STAIN_MATRIX,
        max_conc=REFERENCE_MAX_CONC,
        io: float | str = 240.0,
        alpha: float = 1.0,
        beta: float = 0.15,
        min_tissue_fraction: float = 0.02,
        max_cos: float = 0.98,
        min_conc_fraction: float = 0.2,
        min_od_std: float = 0.03,
        sample_px: int | None = 32768,
    ) -> None:
        super().__init__()
        self.stain_matrix = torch.as_tensor(stain_matrix, dtype=torch.float32).clone()
        self.max_conc = torch.as_tensor(max_conc, dtype=torch.float32).clone()
        if isinstance(io, str) and io != "auto":
            raise ConfigError(f"Macenko io must be a number (glass brightness, uint8 scale) or 'auto', got {io!r}")
        self.io_auto = io == "auto"
        self.io = 240.0 if self.io_auto else float(io)  # the output's glass; the input's too unless io_auto
        self.alpha, self.beta = float(alpha), float(beta)
        self.min_tissue_fraction, self.max_cos = float(min_tissue_fraction), float(max_cos)
        self.min_conc_fraction, self.min_od_std = float(min_conc_fraction), float(min_od_std)
        if sample_px is not None and int(sample_px) < 256:
            raise ConfigError(f"Macenko sample_px must be >= 256 or None (all pixels), got {sample_px}")
        self.sample_px = None if sample_px is None else int(sample_px)

    def optical_density(self, values: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """OD of planar pixels (N, 3, P) against the glass: `io`, or each image's own when io_auto."""
        io = glass_brightness(values)[:, :, None] if self.io_auto else self.io
        od = values.add_(1.0) if inplace else values + 1.0
        return od.div_(io).log_().neg_()

    def estimate(self, od: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stain matrices (N, 3, 2; columns H, E) of planar OD pixels (N, 3, P), and which are usable."""
        # tissue: OD >= beta in every channel (three contiguous planes beat a strided .all(1))
        mask = torch.minimum(torch.minimum(od[:, 0], od[:, 1]), od[:, 2]) >= self.beta
        n = mask.sum(-1)
        # covariance from moments about a shift (cov is shift-invariant; the shift, the mean of
        # a coarse subsample, keeps float32 from cancelling): one masked product, one bmm
        shift = od[..., ::61].mean(-1, keepdim=True)
        dw = torch.sub(od, shift).mul_(mask[:, None, :])
        first = dw.sum(-1) / n.clamp_min(1)[:, None]
        second = dw @ dw.transpose(1, 2) / n.clamp_min(1)[:, None, None]
        cov = (second - first[:, :, None] * first[:, None, :]) * (n / (n - 1).clamp_min(1))[:, None, None]
        # eigh of a degenerate (e.g. all-zero) 3x3 is fine; a NaN one would raise, so clean first
        cov = torch.nan_to_num(cov, nan=0.0, posinf=0.0, neginf=0.0)
        evals, vecs = torch.linalg.eigh(cov)
        plane = vecs[:, :, 1:3]  # the two largest eigenvectors, as torchstain orders them
        proj = plane.transpose(1, 2) @ od
        phi = torch.atan2(proj[:, 1], proj[:, 0])
        lo = masked_percentile(phi, mask, self.alpha, n)
        hi = masked_percentile(phi, mask, 100.0 - self.alpha, n)
        v_lo = (plane @ torch.stack((lo.cos(), lo.sin()), -1)[..., None])[..., 0]
        v_hi = (plane @ torch.stack((hi.cos(), hi.sin()), -1)[..., None])[..., 0]
        # haematoxylin absorbs more red than eosin: the vector with the larger R component is H
        h_first = (v_lo[:, 0] > v_hi[:, 0])[:, None]
        he = torch.stack((torch.where(h_first, v_lo, v_hi), torch.where(h_first, v_hi, v_lo)), dim=-1)
        ok = n >= max(16, self.min_tissue_fraction * od.shape[1])
        ok &= torch.isfinite(he).all(-1).all(-1)
        ok &= (he >= -0.1).all(-1).all(-1)
        ok &= (he[:, :, 0] * he[:, :, 1]).sum(-1).abs() < self.max_cos
        # uniform colour (blank glass, blur): the "stain plane" is just noise, its vectors random
        ok &= evals[:, -1].clamp_min(0).sqrt() >= self.min_od_std
        return he, ok

    def _concentrations(self, od: torch.Tensor, he: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Least-squares stain amounts (N, 2, P) and their 99th percentiles (N, 2)."""
        conc = torch.linalg.pinv(he) @ od
        everything = torch.ones((1, 1, 1), dtype=torch.bool, device=conc.device)
        max_c = masked_percentile(conc, everything, 99.0)  # both stains in one topk
        return conc, max_c

    def _fit(self, values: torch.Tensor) -> None:
        if self.io_auto:  # outputs get the target's glass
            self.io = float(glass_brightness(values)[0].mean())
        od = self.optical_density(values)
        he, ok = self.estimate(od)
        if not bool(ok[0]):
            raise DataError(
                "Macenko target: stain vectors cannot be estimated (too little tissue or a single "
                "stain); choose a target with both haematoxylin and eosin"
            )
        _, max_c = self._concentrations(od, he)
        self.stain_matrix, self.max_conc = he[0].cpu(), max_c[0].cpu()

    def _sample(self, od: torch.Tensor) -> torch.Tensor:
        """A regular (strided, deterministic) subsample of at most `sample_px` pixels per image.

        The stain matrix and the 99th-percentile concentrations are statistics: a 256 px tile
        gives nearly the same answer (see the tolerance in tests) from every 2nd pixel, and the
        covariance, angles and percentiles (topk, the costliest step) then cost half.
        Every pixel is still normalised.
        """
        n_px = od.shape[-1]
        if self.sample_px is None or n_px <= self.sample_px:
            return od
        return od[..., :: -(-n_px // self.sample_px)].contiguous()

    def _transform(self, values: torch.Tensor) -> torch.Tensor:
        ref = self.stain_matrix.to(values.device)
        ref_max = self.max_conc.to(values.device)
        # io auto: a field without tissue (empty glass) is left as it is, like Reinhard's: its
        # glass noise and vignetting projected on the stain plane would come out as pink/blue speckle
        empty: torch.Tensor | None = None
        original: torch.Tensor | None = None
        if self.io_auto:
            empty = tissue_fraction(self._sample(values)) < self.min_tissue_fraction
            if bool(empty.any()):
                original = values.clone()
            else:
                empty = None
        od = self.optical_density(values, inplace=True)  # values are ours (a fresh float copy)
        sample = self._sample(od)
        he, ok = self.estimate(sample)
        self.last_fallbacks += (~ok).tolist()
        if not bool(ok.all()):
            self.fallbacks += int((~ok).sum())
            log.debug("Macenko: %d of %d images fell back to the reference stain matrix", int((~ok).sum()), len(ok))
            he = torch.where(ok[:, None, None], he, ref.expand_as(he))
        unmix = torch.linalg.pinv(he)  # (N, 2, 3): least-squares concentrations, as torchstain's lstsq
        everything = torch.ones((1, 1, 1), dtype=torch.bool, device=od.device)
        max_c = masked_percentile(unmix @ sample, everything, 99.0)  # both stains in one topk
        floor = ref_max * self.min_conc_fraction
        # a fallback tile (glass, blur, one stain) has no meaningful stain maxima: rescaling
        # would stretch its noise into fake stain, so it is only re-coloured (scale 1)
        max_c = torch.where(ok[:, None] & torch.isfinite(max_c), max_c.maximum(floor), ref_max)
        # unmix, rescale and remix are all linear in OD: fold them into one 3x3 matrix per
        # image, so the full-resolution work is a single batched matmul and an exp
        remix = ref @ ((ref_max / max_c)[:, :, None] * unmix)
        out = torch.bmm(remix, od).neg_().exp_().mul_(self.io)
        out = out.clamp_(0.0, 255.0)
        if empty is not None:
            out = torch.where(empty[:, None, None], cast(torch.Tensor, original), out)  # cloned with empty
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "stain_matrix": self.stain_matrix.tolist(),
            "max_conc": self.max_conc.tolist(),
            "io": self.io,
            "io_auto": self.io_auto,
            "alpha": self.alpha,
            "beta": self.beta,
            "min_tissue_fraction": self.min_tissue_fraction,
            "max_cos": self.max_cos,
            "min_conc_fraction": self.min_conc_fraction,
            "min_od_std": self.min_od_std,
            "sample_px": self.sample_px,
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> MacenkoNormalizer:
        extra = {
            k: float(state[k])
            for k in ("io", "alpha", "beta", "min_tissue_fraction", "max_cos", "min_conc_fraction", "min_od_std")
            if k in state
        }
        sample_px = state.get("sample_px", 32768)
        norm = cls(
            _state_float(state, "stain_matrix", (3, 2)),
            _state_float(state, "max_conc", (2,)),
            **extra,
            sample_px=None if sample_px is None else int(sample_px),
        )
        norm.io_auto = bool(state.get("io_auto", False))  # older states: a fixed io
        return norm


NORMALIZERS: dict[str, type[StainNormalizer]] = {"reinhard": ReinhardNormalizer, "macenko": MacenkoNormalizer}


def make_normalizer(method: str, **params) -> StainNormalizer:
    """A fresh (unfitted) normaliser by name; unknown names list the valid ones."""
    klass = NORMALIZERS.get(method)
    if klass is None:
        hint = " (Vahadane is not offered: see histoflow.preprocess.stain)" if method == "vahadane" else ""
        raise ConfigError(
            f"preprocess.stain_norm: unknown method {method!r}, expected one of {sorted(NORMALIZERS)}{hint}"
        )
    return klass(**params)
