"""The resolution slide prediction reads tiles at: the checkpoint's, or the one the user says.

A checkpoint trained on tiles records their mpp; one trained on a patch folder does not, and
then the user must give it (never guessed: a wrong mpp changes what every tile shows).
"""

from __future__ import annotations

import logging

from histoflow.checkpoint import Checkpoint
from histoflow.core.errors import ConfigError
from histoflow.tiling.grid import MPP_TOLERANCE
from histoflow.tiling.read import PIXELS_VERSION

log = logging.getLogger(__name__)
PCAM_MPP_HINT = "PCam patches are 96 px at about 0.972 um/px (10x)"


def checkpoint_resolution(ckpt: Checkpoint, mpp: float | None) -> tuple[int, float]:
    """(tile_px, mpp) to predict at: the checkpoint's, or `mpp` when given (warning if it differs)."""
    tile_px, stored, name = ckpt.tile_px, ckpt.mpp, ckpt.path
    if ckpt.pixels_version is not None and ckpt.pixels_version != PIXELS_VERSION:
        log.warning(
            "%s: trained on tiles that another histoflow version resampled (pixels version %d; this one "
            "reads version %d): the tiles it is shown now differ slightly; tile again and retrain for the same pixels",
            name,
            ckpt.pixels_version,
            PIXELS_VERSION,
        )
    if mpp is not None:
        if not mpp > 0:
            raise ConfigError(f"--mpp must be > 0, got {mpp}")
        if stored and abs(stored - mpp) / stored > MPP_TOLERANCE:
            log.warning("%s: trained at %g um/px; predicting at --mpp %g as asked", name, stored, mpp)
        return tile_px, float(mpp)
    if stored:
        return tile_px, float(stored)
    raise ConfigError(
        f"{name}: the checkpoint does not record the microns per pixel it was trained at "
        f"(trained on patches?); pass --mpp, e.g. --mpp 0.972 for a PCam model ({PCAM_MPP_HINT})"
    )
