"""Synthetic pyramidal TIFFs for tests and benchmarks, written tile by tile in bounded memory.

The slide is drawn from a seeded low-resolution "design" (tissue blobs on glass) plus a few
precomputed H&E-coloured textures, so a 40,000 x 40,000 slide is written without ever holding
more than a tile of it. Levels go one after another in the main IFD chain with resolution
tags: that is the layout OpenSlide reads as a multi-level generic TIFF with an mpp (SubIFDs
are invisible to it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histoflow.core.io import atomic_path

GLASS_RGB = (242, 240, 244)


def _design(width: int, height: int, seed: int, cells: int = 96, tissue_fraction: float = 0.4) -> np.ndarray:
    """A float map in [0, 1] (1 = tissue) at low resolution: a few smooth blobs."""
    import cv2

    rng = np.random.default_rng(seed)
    h = max(8, round(cells * height / max(width, height)))
    w = max(8, round(cells * width / max(width, height)))
    noise = rng.random((h, w)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=max(w, h) / 16)
    smooth = (smooth - smooth.min()) / max(1e-6, float(smooth.max() - smooth.min()))
    # threshold at a quantile: every seed gives about the same amount of tissue
    design = (smooth > np.quantile(smooth, 1 - tissue_fraction)).astype(np.float32)
    m = max(1, min(w, h) // 16)  # a glass margin, like a real slide
    design[:m], design[-m:], design[:, :m], design[:, -m:] = 0, 0, 0, 0
    return design


def _textures(tile: int, seed: int, n: int = 8) -> list[np.ndarray]:
    """H&E-like textures: pink stroma with purple nuclei, JPEG-compressible but not flat."""
    import cv2

    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in range(n):
        base = np.empty((tile, tile, 3), np.float32)
        base[:] = (225, 150, 190)
        grain = cv2.GaussianBlur(rng.normal(0, 1, (tile, tile)).astype(np.float32), (0, 0), 3)
        base += grain[..., None] * np.array([10, 18, 12], np.float32) * 3
        for _ in range(tile * tile // 900):  # nuclei
            cx, cy = rng.integers(0, tile, 2)
            cv2.circle(base, (int(cx), int(cy)), int(rng.integers(3, 7)), (110, 60, 150), -1)
        out.append(np.clip(base, 0, 255).astype(np.uint8))
    return out


def write_synthetic_slide(
    path: str | Path,
    width: int,
    height: int,
    mpp: float = 0.25,
    tile_px: int = 512,
    min_level_px: int = 1024,
    seed: int = 0,
    quality: int = 80,
    compression: str = "jpeg",
) -> Path:
    """Write a tiled, JPEG-compressed pyramidal TIFF (levels downsampled by 2) and return its path."""
    import cv2
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    design = _design(width, height, seed)
    textures = _textures(tile_px, seed)
    levels = []
    w, h = width, height
    while True:
        levels.append((w, h))
        if max(w, h) // 2 < min_level_px or min(w, h) // 2 < tile_px:
            break
        w, h = w // 2, h // 2

    def tiles(level_w: int, level_h: int):
        # the design resized to this level, one tile at a time (cv2 on a small crop of the design)
        sy, sx = design.shape[0] / level_h, design.shape[1] / level_w
        for ty in range(0, level_h, tile_px):
            for tx in range(0, level_w, tile_px):
                x0, y0 = int(tx * sx), int(ty * sy)
                x1, y1 = (
                    min(design.shape[1], int(np.ceil((tx + tile_px) * sx)) + 1),
                    min(design.shape[0], int(np.ceil((ty + tile_px) * sy)) + 1),
                )
                crop = design[y0:y1, x0:x1]
                if crop.max() == 0:
                    t = np.empty((tile_px, tile_px, 3), np.uint8)
                    t[:] = GLASS_RGB
                    yield t
                    continue
                # sample the design at this tile's pixel centres
                xs = ((tx + np.arange(tile_px) + 0.5) * sx - x0 - 0.5).astype(np.float32)
                ys = ((ty + np.arange(tile_px) + 0.5) * sy - y0 - 0.5).astype(np.float32)
                mx, my = np.meshgrid(xs, ys)
                alpha = cv2.remap(crop, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[..., None]
                tex = textures[(tx // tile_px * 7 + ty // tile_px * 13) % len(textures)]
                t = (alpha * tex + (1 - alpha) * np.array(GLASS_RGB, np.float32)).astype(np.uint8)
                yield t

    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        for i, (lw, lh) in enumerate(levels):
            res = 1e4 / (mpp * width / lw)  # pixels per centimetre at this level
            tw.write(
                tiles(lw, lh),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile_px, tile_px),
                photometric="rgb",
                compression=compression,
                compressionargs={"level": quality} if compression == "jpeg" else None,
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                metadata=None,
                description=f"histoflow synthetic slide seed={seed}" if i == 0 else None,
            )
    return path
