"""Square windows cut around points of an image, for classifiers that score one object each.

A window of `window_px` centred on pixel (x, y) covers columns x - window_px//2 ... x +
window_px//2 - 1 (rows likewise), so for an even size the point sits on the pixel just right of
and below the middle, the convention `numpy` slicing and the AMi-Br crops share.

Border policies, for points near an image's edge:
- `inside`: only windows wholly inside the image's valid area; the others are not cut. A
  classifier trained and evaluated this way never sees an image border, so it cannot learn where
  in an image it looks (on AMi-Br, where every crop has a mitosis at its centre, that matters).
- `reflect`: every window, mirrored past the edge (OpenCV BORDER_REFLECT_101). Mirrored pixels
  show there is an edge, but not on which side of the image a window lies relative to its
  centre, and both classes get them equally near every edge.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from histoflow.core.errors import ConfigError, DataError

Border = Literal["inside", "reflect"]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


def valid_box(rgb: np.ndarray, dark: int = 8) -> Box:
    """The image minus whole rows/columns of black at its borders (the fill a crop gets where it
    passes a slide's edge): windows must not show that fill either."""
    black = rgb.max(axis=2) <= dark
    rows, cols = ~black.all(axis=1), ~black.all(axis=0)
    if not rows.any():
        raise DataError("image is entirely black: nothing to cut windows from")
    y = np.flatnonzero(rows)
    x = np.flatnonzero(cols)
    return int(x[0]), int(y[0]), int(x[-1]) + 1, int(y[-1]) + 1


def fits(points: np.ndarray, box: Box, window_px: int) -> np.ndarray:
    """Which points have a window wholly inside `box`."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    half = window_px // 2
    x, y = np.round(points[:, 0]).astype(int), np.round(points[:, 1]).astype(int)
    x0, y0, x1, y1 = box
    return (x - half >= x0) & (y - half >= y0) & (x - half + window_px <= x1) & (y - half + window_px <= y1)


def window_region(box: Box, window_px: int) -> Box:
    """The centres whose window fits in `box`, as a box (x1, y1 exclusive; may be empty)."""
    half = window_px // 2
    x0, y0, x1, y1 = box
    return x0 + half, y0 + half, x1 - window_px + half + 1, y1 - window_px + half + 1


def cut_windows(
    rgb: np.ndarray, points: np.ndarray, window_px: int, border: Border = "inside", box: Box | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(windows N'x3xHxW uint8, indices of the points they belong to) for points of `rgb`.

    `inside` skips points whose window leaves `box` (default: the whole image); `reflect` cuts
    every point's window from the image mirrored at `box`'s edges."""
    if window_px < 2:
        raise ConfigError(f"window_px must be >= 2, got {window_px}")
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    h, w = rgb.shape[:2]
    box = box or (0, 0, w, h)
    half = window_px // 2
    if border == "inside":
        keep = np.flatnonzero(fits(points, box, window_px))
        source, offset = rgb, (0, 0)
    elif border == "reflect":
        import cv2

        x0, y0, x1, y1 = box
        keep = np.arange(len(points))
        inner = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        if min(inner.shape[:2]) < 2:
            raise DataError(f"valid area {box} is too small to mirror")
        pad = window_px
        source = cv2.copyMakeBorder(inner, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        offset = (pad - x0, pad - y0)
        inside = (points[:, 0] >= x0) & (points[:, 0] < x1) & (points[:, 1] >= y0) & (points[:, 1] < y1)
        if not inside.all():
            raise DataError(f"{int((~inside).sum())} point(s) lie outside the image's valid area {box}")
    else:
        raise ConfigError(f"border must be 'inside' or 'reflect', got {border!r}")
    out = np.empty((len(keep), 3, window_px, window_px), dtype=np.uint8)
    for n, i in enumerate(keep):
        left = int(round(points[i, 0])) - half + offset[0]
        top = int(round(points[i, 1])) - half + offset[1]
        out[n] = source[top : top + window_px, left : left + window_px].transpose(2, 0, 1)
    return out, keep
