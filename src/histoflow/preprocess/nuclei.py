"""Candidate nuclei: dark haematoxylin blobs, the proposals a mitosis classifier scores.

Mitotic figures are the darkest, most compact haematoxylin objects in H&E, so local maxima of
the smoothed haematoxylin optical density find nearly all of them (and many ordinary nuclei,
the hard negatives). The work is scikit-image's colour deconvolution (`rgb2hed`, Ruifrok &
Johnston) and `peak_local_max` on a scipy Gaussian filter; only the micron-to-pixel conversion
is ours, so one setting works at every scanner resolution.
"""

from __future__ import annotations

import numpy as np

from histoflow.config.mitosis import CandidateConfig
from histoflow.core.errors import DataError

BLOCK_PIXELS = 1 << 20  # pixels per rgb2hed call: its float64 temporaries stay ~50 MB


def haematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density (HxW float32) of an HxWx3 uint8 RGB image.

    rgb2hed works per pixel in float64 (three HxWx3 temporaries: ~2 GB for a 40 MP high-power
    field), so large images go through it a band of rows at a time; the result is the same."""
    from skimage.color import rgb2hed

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DataError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    rows = max(1, BLOCK_PIXELS // max(w, 1))
    out = np.empty((h, w), dtype=np.float32)
    for top in range(0, h, rows):
        out[top : top + rows] = rgb2hed(rgb[top : top + rows])[..., 0]
    return out


def nucleus_candidates(
    rgb: np.ndarray, mpp: float, cfg: CandidateConfig | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """(N, 3) float array of x, y (pixels) and haematoxylin density of candidate nuclei.

    `mask` (HxW bool): candidates only where it is True (e.g. the part of a crop where a
    classifier window fits)."""
    from scipy.ndimage import gaussian_filter
    from skimage.feature import peak_local_max

    cfg = cfg or CandidateConfig()
    if not mpp > 0:
        raise DataError(f"candidate nuclei need the image's microns per pixel, got {mpp}")
    density = gaussian_filter(haematoxylin(rgb), sigma=cfg.sigma_um / mpp)
    peaks = peak_local_max(
        density,
        min_distance=max(1, int(round(cfg.min_distance_um / mpp))),
        threshold_abs=cfg.threshold,
        exclude_border=False,
        labels=None if mask is None else mask.astype(np.uint8),
    )
    if not len(peaks):
        return np.zeros((0, 3), dtype=np.float32)
    rows, cols = peaks[:, 0], peaks[:, 1]
    return np.stack([cols, rows, density[rows, cols]], axis=1).astype(np.float32)
