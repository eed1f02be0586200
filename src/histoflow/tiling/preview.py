"""Preview images of a planned slide: the thumbnail with tissue and kept tiles drawn, and the mask.

Written beside each slide's report so a user can see at a glance what was tiled and why;
kept apart from planning because only the pictures need OpenCV drawing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from histoflow.core.errors import DataError
from histoflow.tiling.grid import TileSpec
from histoflow.tiling.tissue import TissueMask


def draw_overview(view: np.ndarray, mask: TissueMask, specs: Sequence[TileSpec], region_px0: int) -> np.ndarray:
    """The slide view with tissue tinted green, its outline, and every kept tile as a box."""
    import cv2

    img = view.copy()
    tint = img.copy()
    tint[mask.mask] = (0.6 * tint[mask.mask] + 0.4 * np.array([0, 200, 0])).astype(np.uint8)
    img = tint
    contours, _ = cv2.findContours(mask.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, (0, 120, 0), 1)
    d = mask.downsample
    side = max(1, int(round(region_px0 / d)))
    for s in specs:
        x, y = int(s.x / d), int(s.y / d)
        cv2.rectangle(img, (x, y), (x + side - 1, y + side - 1), (0, 0, 255), 1)
    return img


def png_bytes(arr: np.ndarray) -> bytes:
    import cv2

    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover
        raise DataError("cannot encode preview PNG")
    return buf.tobytes()
