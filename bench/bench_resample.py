"""Tile resampling at a factor near a whole number: the box path vs OpenCV's area interpolation.

Run: PYTHONPATH=src python bench/bench_resample.py [--checkpoint runs/demo/pcam_simple_cnn/checkpoints/best.pt]
Prints one JSON line. On tissue windows of the CMU slide (mean grey under 215) at 0.972 um/px
(187 level-0 px -> 96 px, factor 1.95), for tiling.read's box path (2 x 2 box means, then linear
interpolation by 0.974) and, as the baseline in the same run, OpenCV's area interpolation of the
same 187 px region (and, for reference only, Pillow's Lanczos):
  us_per_tile     one tile at a time on one thread, best of --repeats passes over the windows
  speedup         area's time / the box path's time
  mean_abs_diff   grey levels from area interpolation's pixels, mean over windows
  contrast        mean |difference of horizontal neighbours| relative to area's (1 = as sharp)
With --checkpoint, each path's tiles go through that model and the mean |change| of its
last-class probability against area's is reported, with the share of tiles on the same side of 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from histoflow.slide import open_slide  # noqa: E402
from histoflow.tiling.grid import TileSpec  # noqa: E402
from histoflow.tiling.read import resize_tile, window_px  # noqa: E402

DATA = Path(os.environ.get("HISTOFLOW_DATA", REPO.parent / "shared" / "data"))
READ_PX, TILE_PX = 187, 96


def tissue_windows(slide, side: int, step: int) -> list[np.ndarray]:
    whole = slide.read_region((0, 0), 0, slide.dimensions)
    grey = whole.mean(axis=2)
    out = []
    for y in range(0, whole.shape[0] - side, step):
        for x in range(0, whole.shape[1] - side, step):
            if grey[y : y + READ_PX, x : x + READ_PX].mean() < 215:
                out.append(np.ascontiguousarray(whole[y : y + side, x : x + side]))
    return out


def per_tile_us(fn, windows: list[np.ndarray], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for w in windows:
            fn(w)
        best = min(best, (time.perf_counter() - t0) / len(windows))
    return best * 1e6


def contrast(img: np.ndarray) -> float:
    return float(np.abs(np.diff(img.astype(np.float64), axis=1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slide", default=str(DATA / "wsi" / "cmu-1-small-region.svs"))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    spec = TileSpec("<bench>", "s", 0, 0, 0, READ_PX, READ_PX, TILE_PX, 0.972, 1.0, 0)
    slide = open_slide(args.slide)
    windows = tissue_windows(slide, window_px(spec), 93)
    slide.close()

    from PIL import Image

    paths = {
        "area": lambda w: cv2.resize(w[:READ_PX, :READ_PX], (TILE_PX, TILE_PX), interpolation=cv2.INTER_AREA),
        "box": lambda w: resize_tile(w, spec),
        "lanczos": lambda w: np.asarray(
            Image.fromarray(np.ascontiguousarray(w[:READ_PX, :READ_PX])).resize((TILE_PX, TILE_PX), Image.LANCZOS)
        ),
    }
    tiles = {name: np.stack([fn(w) for w in windows]) for name, fn in paths.items()}
    area = tiles["area"]
    out: dict = {"bench": "resample", "windows": len(windows), "read_px": READ_PX, "tile_px": TILE_PX}
    for name, fn in paths.items():
        out[name] = {
            "us_per_tile": round(per_tile_us(fn, windows, args.repeats), 1),
            "mean_abs_diff": round(float(np.abs(tiles[name].astype(np.float64) - area).mean()), 2),
            "contrast": round(np.mean([contrast(t) for t in tiles[name]]) / np.mean([contrast(t) for t in area]), 3),
        }
    out["speedup"] = round(out["area"]["us_per_tile"] / out["box"]["us_per_tile"], 2)
    if args.checkpoint:
        import torch

        from histoflow.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint)[0].eval()
        with torch.inference_mode():
            prob = {
                name: model.probabilities(model(torch.from_numpy(t).permute(0, 3, 1, 2)))[:, -1].numpy()
                for name, t in tiles.items()
            }
        for name in ("box", "lanczos"):
            out[name]["prob_mean_abs_change"] = round(float(np.abs(prob[name] - prob["area"]).mean()), 4)
            out[name]["same_side_of_0.5"] = round(float(((prob[name] > 0.5) == (prob["area"] > 0.5)).mean()), 3)
        out["checkpoint"] = args.checkpoint
    out["opencv"] = cv2.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
