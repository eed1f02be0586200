"""Per-tile quality control and encoding: whitespace and blur checks, JPEG/PNG bytes, the shard row.

`tile_result` turns a tile's pixels (or the error reading them) into what a shard keeps:
a row, a rejection reason or an error message. It never raises for bad data.
"""

from __future__ import annotations

import numpy as np

from histoflow.config.tiling import TileConfig
from histoflow.core.errors import DataError, HistoflowError
from histoflow.tiling.grid import TileSpec


def tile_qc(img: np.ndarray) -> tuple[float, float]:
    """(whitespace fraction, Laplacian variance): glass pixels are bright and grey."""
    import cv2

    # OpenCV, not numpy axis-2 reductions: these run per tile, where numpy's dominated the QC time
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    r, g, b = cv2.split(img)
    spread = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    # OpenCV's stubs accept only arrays for compare's src2; the C++ API takes a scalar too
    glass = cv2.bitwise_and(cv2.compare(gray, 220, cv2.CMP_GT), cv2.compare(spread, 25, cv2.CMP_LT))  # type: ignore[call-overload]
    whitespace = cv2.countNonZero(glass) / glass.size
    _mean, std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))  # exact for uint8 input, faster than float
    return float(whitespace), float(std[0, 0] ** 2)


def encode_tile(img: np.ndarray, cfg: TileConfig) -> bytes:
    if cfg.image_format == "jpeg":
        import simplejpeg

        return simplejpeg.encode_jpeg(
            np.ascontiguousarray(img), quality=cfg.jpeg_quality, colorspace="RGB", colorsubsampling="420"
        )
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise DataError("cannot encode tile as PNG")
    return buf.tobytes()


def tile_result(spec: TileSpec, img: np.ndarray | Exception, cfg: TileConfig) -> tuple[str, dict | str]:
    """("kept", row) or ("rejected", reason) or ("error", message). Never raises for bad data."""
    if isinstance(img, HistoflowError):
        return "error", f"{spec.tile_id}: {img}"
    if isinstance(img, Exception):
        return "error", f"{spec.tile_id}: {type(img).__name__}: {img}"
    whitespace, blur_var = tile_qc(img)
    if cfg.whitespace_max is not None and whitespace > cfg.whitespace_max:
        return "rejected", "whitespace"
    if cfg.blur_min is not None and blur_var < cfg.blur_min:
        return "rejected", "blur"
    return "kept", {
        "tile_id": spec.tile_id,
        "slide_id": spec.slide_id,
        "x": spec.x,
        "y": spec.y,
        "level": spec.level,
        "size_px0": spec.size_px0,
        "mpp": spec.mpp,
        "tile_px": spec.tile_px,
        "tissue_fraction": spec.tissue_fraction,
        "whitespace_fraction": round(whitespace, 4),
        "blur_var": round(blur_var, 2),
        "image_format": cfg.image_format,
        "image": encode_tile(img, cfg),
    }
