"""A numpy array as a slide: tests, stitched montages, images already in memory.

Optionally builds a pyramid (each level half the previous, area-averaged) so code paths that
pick levels are exercised without writing files.
"""

from __future__ import annotations

import numpy as np

from histoflow.core.errors import DataError
from histoflow.slide.base import BaseSlide


class ArraySlide(BaseSlide):
    backend = "array"
    keeps_small_levels = False  # its levels are in memory already

    def __init__(
        self,
        array: np.ndarray,
        mpp: float | None = None,
        slide_id: str | None = None,
        path: str | None = None,
        levels: int = 1,
        vendor: str | None = "array",
    ):
        import cv2

        arr = np.asarray(array)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
            raise DataError(
                f"{path or slide_id or 'array'}: expected an HxWx3 uint8 array, got {arr.shape} {arr.dtype}"
            )
        self._levels = [np.ascontiguousarray(arr[..., :3])]
        for _ in range(1, levels):
            prev = self._levels[-1]
            if min(prev.shape[:2]) < 2:
                break
            self._levels.append(
                cv2.resize(prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA)
            )
        dims = [(a.shape[1], a.shape[0]) for a in self._levels]
        downsamples = [dims[0][0] / w for w, _ in dims]
        path = path or f"<array {slide_id or 'slide'}>"
        super().__init__(
            path,
            dims,
            downsamples,
            None,
            vendor=vendor,
            mpp_override=mpp,
            slide_id=slide_id or ("slide" if path.startswith("<") else None),
        )
        if mpp is not None:
            self.mpp_source = "array"

    def read_region(self, xy_level0, level, size_px) -> np.ndarray:
        x0, y0, w, h = self._check_region(xy_level0, level, size_px)
        ds = self.level_downsamples[level]
        x, y = int(round(x0 / ds)), int(round(y0 / ds))
        src = self._levels[level]
        out = np.full((h, w, 3), 255, np.uint8)  # outside = white glass
        ix0, iy0 = max(x, 0), max(y, 0)
        ix1, iy1 = min(x + w, src.shape[1]), min(y + h, src.shape[0])
        if ix1 > ix0 and iy1 > iy0:
            out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = src[iy0:iy1, ix0:ix1]
        return out

    def __reduce__(self):
        # An in-memory slide is its data: pickling it (for a worker) copies the array.
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls, state):
    obj = object.__new__(cls)
    obj.__dict__.update(state)
    return obj
