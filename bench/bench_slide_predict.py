"""Slide prediction throughput: slide file -> probabilities, vs the model alone on the same tiles.

Run: PYTHONPATH=src python bench/bench_slide_predict.py [--checkpoint CKPT] [--repeats 3]
Prints one JSON line: tiles/s end to end (tiles read and decoded from the slide by reader
threads, batched, model) and for the model alone on the same tiles preloaded as one uint8
tensor (same batch size, same process, same run), and their ratio (target >= 0.85: the
pipeline hides I/O). Also the end to end figure with no reader threads (workers=0: decode and
model in turn), which shows what the overlap buys.

Slide: the real Aperio CMU-1-Small-Region, every grid position (tissue threshold 0) of 96 px
tiles at its native 0.499 um/px with 48 px overlap, so there are enough tiles to time. Model:
the checkpoint given, else an untrained PCam-sized simple_cnn (widths 16-128, depth 1):
throughput does not depend on the weights. Planning (tissue mask, grid) is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from histoflow.config.slides import SlidePredictConfig  # noqa: E402
from histoflow.predict.model_loop import device_of, run_model  # noqa: E402
from histoflow.predict.pipeline import SlideTileSource  # noqa: E402
from histoflow.predict.tiles import open_reader_factory, plan_tiles  # noqa: E402
from histoflow.slide import open_slide  # noqa: E402

DATA = Path(os.environ.get("HISTOFLOW_DATA", REPO.parent / "shared" / "data"))


def load_model(checkpoint: str | None):
    if checkpoint:
        from histoflow.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint)[0], checkpoint
    from histoflow.config import ModelConfig
    from histoflow.models.factory import create_model

    torch.manual_seed(0)
    return create_model(
        ModelConfig(name="simple_cnn", params={"widths": [16, 32, 64, 128], "depth": 1}), 2
    ).eval(), "simple_cnn[16,32,64,128] untrained"


@torch.inference_mode()
def model_alone(model, images: np.ndarray, batch_size: int, device) -> float:
    from histoflow.predict.patches import autocast_for

    x_all = torch.from_numpy(images).permute(0, 3, 1, 2)
    model = model.eval().to(device).to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    for s in range(0, len(x_all), batch_size):
        x = x_all[s : s + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        with autocast_for(device):
            p = model.probabilities(model.head(model.features(x))).float().cpu()
    del p
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slide", default=str(DATA / "wsi" / "cmu-1-small-region.svs"))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--tile-px", type=int, default=96)
    ap.add_argument("--overlap-px", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    model, model_name = load_model(args.checkpoint)
    cfg = SlidePredictConfig(
        mpp=0.5, tissue_threshold=0.0, overlap_px=args.overlap_px, batch_size=args.batch_size, workers=args.workers
    )
    device = device_of(None)
    slide = open_slide(args.slide)
    plan = plan_tiles(slide, args.tile_px, max(slide.mpp, 0.5), cfg)
    n = len(plan.specs)

    def source():
        return SlideTileSource(args.slide, plan.specs, open_reader_factory(args.slide, cfg))

    # preload the same tiles for the model-alone baseline (also warms the OS page cache and torch)
    pre = run_model(model, source(), args.tile_px, SlidePredictConfig(workers=0, batch_size=args.batch_size), device)
    from histoflow.tiling.read import read_tile

    images = np.stack([read_tile(slide, s) for s in plan.specs])
    e2e, alone, serial = [], [], []
    for _ in range(args.repeats):  # interleaved, so a change in machine load hits all three alike
        alone.append(model_alone(model, images, args.batch_size, device))
        res = run_model(model, source(), args.tile_px, cfg, device)
        e2e.append(res.total_s)
        serial.append(
            run_model(
                model, source(), args.tile_px, SlidePredictConfig(workers=0, batch_size=args.batch_size), device
            ).total_s
        )
    assert len(res.indices) == n and not res.errors and pre.probs.shape == res.probs.shape
    med = statistics.median
    out = {
        "bench": "slide_predict",
        "slide": Path(args.slide).name,
        "tiles": n,
        "tile_px": args.tile_px,
        "model": model_name,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "reader_threads": args.workers,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "end_to_end_tiles_per_s": round(n / med(e2e), 1),
        "model_alone_tiles_per_s": round(n / med(alone), 1),
        "no_overlap_tiles_per_s": round(n / med(serial), 1),
        "ratio": round(med(alone) / med(e2e), 3),
        "ratio_no_overlap": round(med(alone) / med(serial), 3),
        "runs_s": {
            "end_to_end": [round(v, 3) for v in e2e],
            "model_alone": [round(v, 3) for v in alone],
            "no_overlap": [round(v, 3) for v in serial],
        },
        "cpu_count": os.cpu_count(),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
