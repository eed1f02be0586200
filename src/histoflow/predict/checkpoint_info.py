"""What slide prediction reads from a patch-model checkpoint: its resolution and a fingerprint.

The only place predict interprets checkpoint metadata, kept small on purpose: it is to be
answered by histoflow.checkpoint.Checkpoint (tile size, mpp, fingerprint) once that exists.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from histoflow.core.errors import ConfigError
from histoflow.tiling.grid import MPP_TOLERANCE

log = logging.getLogger(__name__)
PCAM_MPP_HINT = "PCam patches are 96 px at about 0.972 um/px (10x)"


def checkpoint_resolution(meta: dict, mpp: float | None) -> tuple[int, float]:
    """(tile_px, mpp) the model was trained at. A checkpoint trained on patch folders stores no
    mpp: the user must say it (never guessed: a wrong mpp changes what every tile shows)."""
    tile_px = int(meta.get("tile_px") or meta["image_px"])
    stored = meta.get("mpp")
    name = meta.get("path", "checkpoint")
    if mpp is not None:
        if not mpp > 0:
            raise ConfigError(f"--mpp must be > 0, got {mpp}")
        if stored and abs(stored - mpp) / stored > MPP_TOLERANCE:
            log.warning("%s: trained at %g um/px; predicting at --mpp %g as asked", name, stored, mpp)
        return tile_px, float(mpp)
    if stored:
        return tile_px, float(stored)
    raise ConfigError(f"{name}: the checkpoint does not record the microns per pixel it was trained at "
                      f"(trained on patches?); pass --mpp, e.g. --mpp 0.972 for a PCam model ({PCAM_MPP_HINT})")


def checkpoint_fingerprint(path: str | Path) -> str:
    """Hash of the checkpoint file: ties outputs (resume, MIL embeddings) to these exact weights."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
