"""Stitched "slides" from real patches: a known pattern of labelled patches as a pyramidal TIFF.

Used to check heatmaps by eye and in tests: the model's heatmap over the montage must
reproduce the pattern it was built from (tumour patches where the pattern says 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from histoflow.core.errors import DataError
from histoflow.core.io import atomic_path


def montage_array(
    pattern: np.ndarray, pools: dict[int, Sequence[Path]], patch_px: int = 96, seed: int = 0, glass: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, (rows, cols) array of the patch used: index into its pool or -1 for glass).

    pattern: (rows, cols) ints, a label per cell (a key of `pools`), or `glass` for an empty cell.
    Patches are drawn without replacement within each label (seeded) so no patch appears twice.
    """
    import cv2

    rng = np.random.default_rng(seed)
    order = {k: list(rng.permutation(len(v))) for k, v in pools.items()}
    rows, cols = pattern.shape
    img = np.full((rows * patch_px, cols * patch_px, 3), 242, np.uint8)
    used = np.full(pattern.shape, -1, np.int64)
    for r in range(rows):
        for c in range(cols):
            lab = int(pattern[r, c])
            if lab == glass:
                continue
            if not order.get(lab):
                raise DataError(f"montage: not enough patches with label {lab} for the pattern")
            i = order[lab].pop()
            bgr = cv2.imread(str(pools[lab][i]), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DataError(f"{pools[lab][i]}: cannot read patch")
            patch = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (patch_px, patch_px), interpolation=cv2.INTER_AREA)
            img[r * patch_px : (r + 1) * patch_px, c * patch_px : (c + 1) * patch_px] = patch
            used[r, c] = i
    return img, used


def write_pyramid_tiff(
    path: str | Path, img: np.ndarray, mpp: float, tile_px: int = 256, min_level_px: int = 512, quality: int = 90
) -> Path:
    """A tiled JPEG pyramidal TIFF (levels halved) with its resolution tags in um/px, atomically."""
    import cv2
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    levels = [img]
    while min(levels[-1].shape[:2]) // 2 >= max(min_level_px, tile_px):
        prev = levels[-1]
        levels.append(cv2.resize(prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA))
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        for i, lv in enumerate(levels):
            res = 1e4 / (mpp * img.shape[1] / lv.shape[1])  # pixels per centimetre at this level
            tw.write(
                lv,
                tile=(tile_px, tile_px),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                metadata=None,
            )
    return path
