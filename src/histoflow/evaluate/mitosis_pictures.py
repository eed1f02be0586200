"""Pictures of detections on crops: true positives, false positives and misses, to look at.

Crops up to VIEW_PX are drawn whole; a larger image (a high-power field) as a VIEW_PX square
around its first false positive or miss.

Each crop is enlarged (nearest neighbour, so pixels stay pixels) and drawn with OpenCV:
green circle = a mitosis found (radius = the matching radius), red circle = a mitosis missed,
grey circle = a mitosis outside the evaluated area (ignored), green dot = true positive
detection, orange cross = false positive, the thin white frame = where window centres may lie;
a band above the grid says so, with the threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histoflow.core.images import read_image
from histoflow.core.io import atomic_path
from histoflow.evaluate.detection import ImageDetections, classify_detections

GREEN, RED, ORANGE, GREY, WHITE = (40, 200, 40), (230, 40, 40), (255, 150, 0), (160, 160, 160), (255, 255, 255)


VIEW_PX = 192  # a larger image (a whole high-power field) is drawn as this square around its first error


def focus(rgb: np.ndarray, item: ImageDetections, threshold: float, view_px: int = VIEW_PX):
    """(the part of `rgb` to draw, `item` in its pixels, whether it is the whole image): a field of
    thousands of pixels, enlarged whole, would be hundreds of MB per picture and show nothing;
    the view centres on a false positive, else a miss, else a mitosis, else the best detection."""
    h, w = rgb.shape[:2]
    if max(h, w) <= view_px:
        return rgb, item, True
    result = classify_detections(item, threshold)
    fp = result["kept"][result["status"] == "fp"]
    places = [item.det[fp], item.gt[result["missed"]], item.gt, item.det[np.argsort(-item.scores)], [[w / 2, h / 2]]]
    cx, cy = next(np.asarray(p, dtype=float)[0] for p in places if len(p))
    x0 = int(np.clip(round(cx) - view_px // 2, 0, max(w - view_px, 0)))
    y0 = int(np.clip(round(cy) - view_px // 2, 0, max(h - view_px, 0)))
    shift = np.array([x0, y0], dtype=float)
    moved = ImageDetections(
        item.image, item.gt - shift, item.det - shift, item.scores, item.radius_px, item.ignore - shift
    )
    return rgb[y0 : y0 + view_px, x0 : x0 + view_px], moved, False


def draw_crop(
    rgb: np.ndarray, item: ImageDetections, threshold: float, window_px: int, zoom: int = 3, frame: bool = True
) -> np.ndarray:
    import cv2

    big = cv2.resize(rgb, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    result = classify_detections(item, threshold)
    found = set(range(len(item.gt))) - set(result["missed"].tolist())

    def at(p) -> tuple[int, int]:
        return int(round(p[0] * zoom)), int(round(p[1] * zoom))

    radius = int(round(item.radius_px * zoom))
    for i, p in enumerate(item.gt):
        cv2.circle(big, at(p), radius, GREEN if i in found else RED, 2)
    for p in item.ignore:
        cv2.circle(big, at(p), radius, GREY, 1)
    for j, status in zip(result["kept"], result["status"]):
        x, y = at(item.det[j])
        if status == "tp":
            cv2.circle(big, (x, y), 4, GREEN, -1)
        elif status == "fp":
            cv2.drawMarker(big, (x, y), ORANGE, cv2.MARKER_TILTED_CROSS, 14, 3)
    if frame:  # the frame of a whole crop; a view of a larger image has no edge of it to show
        half = window_px // 2
        h, w = rgb.shape[:2]
        cv2.rectangle(big, (half * zoom, half * zoom), ((w - half) * zoom, (h - half) * zoom), WHITE, 1)
    return big


def legend_band(width: int, threshold: float, window_frame: bool) -> np.ndarray:
    """A white band naming each mark, drawn with the marks themselves, and the threshold."""
    import cv2

    band = np.full((64, width, 3), 255, np.uint8)
    font, scale, ink = cv2.FONT_HERSHEY_SIMPLEX, 0.55, (30, 30, 30)
    cv2.putText(
        band, f"Mitosis detections at score threshold {threshold:.3f}", (10, 22), font, 0.65, ink, 1, cv2.LINE_AA
    )
    x, y = 10, 48
    entries = [("circle", GREEN, "mitosis found"), ("circle", RED, "mitosis missed"), ("circle", GREY, "not evaluated"),
               ("dot", GREEN, "true positive"), ("cross", ORANGE, "false positive")]  # fmt: skip
    if window_frame:
        entries.append(("frame", (120, 120, 120), "where window centres may lie"))
    for kind, colour, text in entries:
        if kind == "circle":
            cv2.circle(band, (x + 8, y - 5), 8, colour, 2)
        elif kind == "dot":
            cv2.circle(band, (x + 8, y - 5), 4, colour, -1)
        elif kind == "cross":
            cv2.drawMarker(band, (x + 8, y - 5), colour, cv2.MARKER_TILTED_CROSS, 14, 3)
        else:
            cv2.rectangle(band, (x, y - 13), (x + 16, y + 3), colour, 1)
        cv2.putText(band, text, (x + 22, y), font, scale, ink, 1, cv2.LINE_AA)
        x += 22 + cv2.getTextSize(text, font, scale, 1)[0][0] + 24
    return band


def detection_montage(
    crops: list[tuple[str, ImageDetections]], threshold: float, path: Path, window_px: int, columns: int = 6
) -> Path | None:
    """A grid of drawn crops written atomically to `path` (PNG)."""
    import cv2

    if not crops:
        return None
    tiles, any_frame = [], False
    for p, item in crops:  # one image read at a time
        rgb, shown, whole = focus(read_image(p), item, threshold)
        tiles.append(draw_crop(rgb, shown, threshold, window_px, frame=whole))
        any_frame |= whole
    height, width = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)  # fields need not be square
    tiles = [
        cv2.copyMakeBorder(t, 2, 2 + height - t.shape[0], 2, 2 + width - t.shape[1], cv2.BORDER_CONSTANT) for t in tiles
    ]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    grid = np.concatenate(rows, axis=0)
    grid = np.concatenate([legend_band(grid.shape[1], threshold, any_frame), grid], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), grid[:, :, ::-1])
    return path
