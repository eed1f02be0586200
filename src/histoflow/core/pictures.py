"""What every histoflow picture shares: how a class is named, how a value maps to a colour, how
unscored tissue looks, and how long a scale bar is.

One place, so the tiling thumbnail, the slide heatmap, the report's slide thumbnails, the
evaluation plots and the Grad-CAM gallery say the same thing the same way:

- a class named by a bare number reads "class 1", so a probability reads "P(class 1)", never "P(1)";
- scores are painted opaque in a perceptually uniform colormap (viridis), so a colour bar shows
  exactly the colours on the map (a translucent overlay mixes them with the stain and no bar
  can match);
- tissue without a score is light grey with grey diagonal lines, which no viridis colour looks like;
- a scale bar is 1, 2 or 5 x 10^k um long, about a fifth of the picture's width.

Only numpy here; matplotlib and PIL are imported where a picture is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CMAP = "viridis"
HATCH = np.array([115, 115, 115], np.uint8)  # lines over unscored tissue; no viridis colour is grey
UNSCORED = 235  # the light grey under them
HATCH_EVERY = 4  # px between the diagonal lines


def class_label(name: object) -> str:
    """A class as a picture names it: "class 1" for a bare number, the name itself otherwise."""
    text = str(name)
    return f"class {text}" if text.lstrip("-").isdigit() else text


def probability_label(name: object) -> str:
    """ "P(tumour)", or "P(class 1)" for a class named by a number."""
    return f"P({class_label(name)})"


def class_labels(names: Sequence[object]) -> list[str]:
    return [class_label(n) for n in names]


def hatch(canvas: np.ndarray, where: np.ndarray) -> None:
    """Paint unscored tissue in place, where `where` is True: light grey with diagonal grey lines."""
    yy, xx = np.indices(where.shape)
    canvas[where] = UNSCORED
    canvas[where & ((xx + yy) % HATCH_EVERY == 0)] = HATCH


def grey(image: np.ndarray, fade: float = 0.4) -> np.ndarray:
    """An RGB (or grey) uint8 image as light grey RGB: the slide's outline stays visible, but no
    stain hue can be mistaken for a colour of the map drawn over it."""
    img = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    lum = img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    light = (255 - fade * (255 - lum)).round().astype(np.uint8)
    return np.repeat(light[..., None], 3, axis=2)


def value_colours(values: np.ndarray, vmin: float = 0.0, vmax: float = 1.0, cmap: str = CMAP) -> np.ndarray:
    """(N, 3) uint8 colours of `values` (NaN: the lowest colour; callers leave NaN unpainted),
    exactly as matplotlib's colour bar for (cmap, vmin, vmax) shows them."""
    import matplotlib

    norm = np.clip((np.asarray(values, np.float64) - vmin) / ((vmax - vmin) or 1.0), 0.0, 1.0)
    rgba = matplotlib.colormaps[cmap](np.nan_to_num(norm))
    return (np.asarray(rgba)[..., :3] * 255).round().astype(np.uint8)


def scale_bar_um(width_um: float, fraction: float = 0.2) -> float:
    """The longest of 1, 2, 5 x 10^k um that fits in `fraction` of a picture `width_um` wide."""
    target = max(width_um * fraction, 1e-6)
    exp = math.floor(math.log10(target))
    return max(m * 10.0**e for e in (exp - 1, exp) for m in (1, 2, 5) if m * 10.0**e <= target)


def length_text(um: float) -> str:
    """ "500 um", "2 mm"."""
    if um >= 1000:
        return f"{um / 1000:g} mm"
    return f"{um:g} um"
