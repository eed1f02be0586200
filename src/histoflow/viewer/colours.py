"""Colour maps for overlays: lookup tables from matplotlib, values -> RGBA with a threshold."""

from __future__ import annotations

from functools import cache

import numpy as np

from histoflow.core.errors import ConfigError

COLOURMAPS = ("jet", "viridis", "magma", "turbo", "coolwarm", "Reds", "gray")
DEFAULT_COLOURMAP = "jet"  # heatmap.png's map: the viewer shows what the PNGs show


@cache
def lut(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB for a colour map offered by the viewer."""
    if name not in COLOURMAPS:
        raise ConfigError(f"unknown colour map {name!r}; expected one of {', '.join(COLOURMAPS)}")
    import matplotlib

    rgba = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))
    return np.round(rgba[:, :3] * 255).astype(np.uint8)


def stops(name: str, n: int = 11) -> list[str]:
    """`n` evenly spaced colours as #rrggbb: the page draws legends as CSS gradients from them."""
    table = lut(name)
    return ["#{:02x}{:02x}{:02x}".format(*tuple(table[round(i * 255 / (n - 1))])) for i in range(n)]


def colourise(
    values: np.ndarray, vmin: float, vmax: float, cmap: str, threshold: float | None = None, alpha: int = 255
) -> np.ndarray:
    """RGBA image of a float array: NaN and values below `threshold` are transparent."""
    span = (vmax - vmin) or 1.0
    finite = np.isfinite(values)
    idx = np.zeros(values.shape, np.uint8)
    idx[finite] = np.clip(np.round((values[finite] - vmin) / span * 255), 0, 255).astype(np.uint8)
    out = np.empty((*values.shape, 4), np.uint8)
    out[..., :3] = lut(cmap)[idx]
    shown = finite if threshold is None else finite & (np.where(finite, values, -np.inf) >= threshold)
    out[..., 3] = np.where(shown, alpha, 0).astype(np.uint8)
    return out


def encode_png(rgba: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgba), cv2.COLOR_RGBA2BGRA))
    if not ok:  # pragma: no cover - OpenCV fails only on empty arrays, which callers never pass
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
