"""Tissue masks from a low-resolution view of a slide: pure numpy/OpenCV, no slide I/O here.

Otsu on HSV saturation (default) or on optical density separates stained tissue from glass;
glass is also rejected explicitly (bright and unsaturated), as are very dark pixels (scanner
borders, folds of black ink) and pen marks (green and blue inks: hues H&E never has).
Morphological closing then opening cleans the mask, small holes are filled, and connected
components smaller than `min_area_um2` are dropped (dust, debris, isolated cells).

All of it assumes brightfield: bright glass, stained tissue. A fluorescence or dark-field scan
(black background, bright nuclei: the NanoZoomer DAPI sample keeps ~12% of its view, 3 of 56
tiles, though tissue covers it) is not detected as such; its dark background is reported
(`dark_background`) so the user learns why, instead of a silent near-empty result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from histoflow.core.errors import ConfigError

log = logging.getLogger(__name__)
METHODS = ("saturation", "od")
DARK_BACKGROUND_VALUE = 64  # median brightness (HSV value) under which a view is not brightfield


@dataclass(frozen=True)
class TissueMask:
    """A boolean mask and the level-0 pixels each mask pixel covers (x and y alike)."""

    mask: np.ndarray  # HxW bool, True = tissue
    downsample: float  # level-0 px per mask px
    threshold: float  # the Otsu threshold used (saturation 0-255, or OD x 100)
    pen_fraction: float  # fraction of the view rejected as pen ink
    method: str
    background_value: float = 255.0  # median brightness of the view (HSV value, 0-255)

    @property
    def dark_background(self) -> bool:
        """A dark view (fluorescence, dark-field): brightfield tissue detection does not apply."""
        return self.background_value < DARK_BACKGROUND_VALUE

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 values (OpenCV's implementation)."""
    import cv2

    v = np.ascontiguousarray(values.reshape(-1, 1).astype(np.uint8))
    t, _ = cv2.threshold(v, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t)


def pen_mask(rgb: np.ndarray) -> np.ndarray:
    """Green/blue/black marker ink. H&E is pink to purple (hue ~250-360 and 0-20 degrees):
    inks with hue 60-240 degrees and strong saturation are never stain."""
    import cv2

    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # OpenCV hue is degrees / 2
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    coloured_ink = (h >= 30) & (h <= 118) & (s > 70) & (v > 30)
    black_ink = v < 40
    return coloured_ink | black_ink


def tissue_mask(
    rgb: np.ndarray,
    downsample: float,
    mpp: float | None = None,
    method: str = "saturation",
    min_area_um2: float = 5000.0,
    min_area_fraction: float = 1e-4,
    reject_pen: bool = True,
    glass_value: int = 225,
    glass_saturation: int = 25,
    min_saturation: int = 15,
) -> TissueMask:
    """Boolean tissue mask of an RGB view of a slide taken at `downsample`.

    min_area_um2 applies when the slide's level-0 `mpp` is known; otherwise components under
    `min_area_fraction` of the view are dropped.
    """
    import cv2

    if method not in METHODS:
        raise ConfigError(f"tissue method must be one of {METHODS}, got {method!r}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ConfigError(f"tissue_mask expects an HxWx3 uint8 image, got {rgb.shape} {rgb.dtype}")
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    sat, val = hsv[..., 1], hsv[..., 2]
    glass = (val >= glass_value) & (sat <= glass_saturation)
    if method == "saturation":
        signal = sat
        floor = min_saturation  # all-glass views: Otsu would split noise; tissue needs real colour
    else:
        od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0).sum(axis=2)  # 0 (white) .. ~16.6
        signal = np.clip(od * 100 / 3, 0, 255).astype(np.uint8)  # OD 0..7.65 -> 0..255
        floor = int(0.15 * 100 / 3)  # OD sum 0.15: below it a pixel is glass whatever Otsu says
    # Otsu over the whole view: it must split glass from tissue. (Over non-glass pixels only it
    # would split pale collagen from dense nuclei and drop the pale tissue.)
    threshold = max(otsu_threshold(signal), float(floor)) if signal.size else 255.0
    mask = (signal > threshold) & ~glass
    pen: np.ndarray = np.zeros_like(mask)
    if reject_pen:
        pen = pen_mask(rgb)
        # isolated bluish pixels are dark nuclei, not ink: keep only solid ink strokes, then grow
        # them a little because ink edges blend into tissue colours
        pen = cv2.morphologyEx(pen.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        pen = cv2.dilate(pen, np.ones((5, 5), np.uint8)).astype(bool)
        mask &= ~pen
    mask = clean_mask(mask, downsample, mpp, min_area_um2, min_area_fraction)
    return TissueMask(
        mask=mask,
        downsample=float(downsample),
        threshold=threshold,
        pen_fraction=float(pen.mean()) if pen.size else 0.0,
        method=method,
        background_value=median_u8(val),
    )


def median_u8(values: np.ndarray) -> float:
    """Median of uint8 values from their histogram (np.median sorts: ~10x slower on a view)."""
    counts = np.bincount(values.ravel(), minlength=256)
    if not counts.sum():
        return 255.0
    return float(np.searchsorted(np.cumsum(counts), (counts.sum() + 1) // 2))


def dark_background_note(slide_id: str, mask: TissueMask) -> str:
    """Why a fluorescence/dark-field slide gives few or no tiles, in words a user can act on."""
    return (
        f"{slide_id}: dark background (median brightness {mask.background_value:.0f}/255): this looks like a "
        "fluorescence or dark-field scan, but tissue detection (and histoflow's H&E models) expect brightfield "
        f"slides with bright glass; tissue found in {mask.tissue_fraction:.1%} of the view, tiles and "
        "predictions from it are not meaningful"
    )


def clean_mask(
    mask: np.ndarray, downsample: float, mpp: float | None, min_area_um2: float, min_area_fraction: float
) -> np.ndarray:
    """Close gaps, drop specks, fill holes, remove components below the minimum area."""
    import cv2

    m: np.ndarray = mask.astype(np.uint8)
    k = 3 if max(m.shape) < 2000 else 5
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel)
    if mpp:
        min_px = min_area_um2 / (mpp * downsample) ** 2
    else:
        min_px = min_area_fraction * m.size
    # fill small holes (lumina, fat cells) enclosed by tissue; large enclosed glass stays out
    n_h, holes, stats_h, _ = cv2.connectedComponentsWithStats((m == 0).astype(np.uint8), connectivity=4)
    if n_h > 1:
        h, w = m.shape
        x, y, bw, bh, area = (stats_h[:, i] for i in range(5))
        touches_border = (x == 0) | (y == 0) | (x + bw == w) | (y + bh == h)
        fill = ~touches_border & (area <= 4 * max(min_px, 1))
        fill[0] = False
        m = m | fill[holes].astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= max(min_px, 1)
    return keep[labels]


def mask_fraction(mask: TissueMask, x: int, y: int, size_px0: int) -> float:
    """Fraction of tissue in the level-0 square (x, y, size) (slow path; the grid uses integrals)."""
    d = mask.downsample
    x0, y0 = int(x / d), int(y / d)
    x1, y1 = max(x0 + 1, int(np.ceil((x + size_px0) / d))), max(y0 + 1, int(np.ceil((y + size_px0) / d)))
    win = mask.mask[y0:y1, x0:x1]
    return float(win.mean()) if win.size else 0.0
