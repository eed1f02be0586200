"""Embedding throughput: slide file -> stored features (`histoflow embed --encoder`), vs the encoder
alone on the same tiles preloaded, same run. Target: >= 0.85.

Run: PYTHONPATH=src python bench/bench_embed.py [--encoder vit-s16-imagenet] [--repeats 5]
Prints one JSON line. Encoder: a registered one with random weights (throughput does not depend on
the weights), by default the ViT-S/16 entry (22 M parameters, 224 px tiles at 0.5 um/px: the
slide's own level 0, no resizing). Timed as interleaved pairs, `--repeats` times (the next pair in
the other order, so neither always runs first):
  end to end   histoflow.mil.embed.embed_slide: open the slide, tissue mask, grid, tiles read and
               decoded by the reader threads, the encoder, embeddings.npy + tiles.parquet +
               embed.json written (a fresh output folder each time, so nothing resumes)
  model alone  the same encoder (its normalisation included) on the same tiles preloaded as one
               uint8 array, same batch size, same process and threads
and reports the median of the per-pair ratios (model alone time / end-to-end time; 1.0 = reading
and writing cost nothing), min and max, the median tiles/s of each, and every run. Peak resident
memory (VmHWM, reset before each phase through /proc/self/clear_refs) is reported per phase: the
reader threads share the process, so it is the peak of the model plus all readers.

Measured on 2026-12-02, CMU-1-Small-Region, 117 tiles of 224 px at 0.5 um/px, ViT-S/16 random,
2 torch threads, 2 reader threads, batch 32, on a 2-core AMD EPYC shared with other jobs
(load average 3.2 before; other processes' CPU share median 0.03, max 0.57 during the pairs),
`--repeats 5`, one run:
  ratio 0.897 (0.516-1.15), 17.7 vs 20.4 tiles/s end to end vs encoder alone; peak RSS 1,421 MB
  end to end vs 1,430 MB encoder alone (the process: torch, the model and the reader threads).
The three pairs on a quiet machine gave 0.897, 0.821, 0.994; the two loaded ones 0.516 and 1.15.
An earlier `--repeats 3` run under load (others' share 0.57) gave 1.186 (0.697-1.441), 7 tiles/s.
Since 2026-12-01 the CPU default reads tiles between batches on a 2-core host (no reader threads:
predict.pipeline.reader_threads); one quiet run of `--repeats 5` then gave 0.983 (0.923-1.004),
22.1 vs 22.8 tiles/s, peak RSS 1,398 vs 1,389 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_slide_predict import Others  # noqa: E402

from histoflow.config.slides import SlidePredictConfig  # noqa: E402
from histoflow.mil.embed import embed_slide, encoder_embedder  # noqa: E402
from histoflow.predict.pipeline import reader_threads  # noqa: E402
from histoflow.predict.tiles import plan_tiles  # noqa: E402
from histoflow.slide import open_slide  # noqa: E402
from histoflow.tiling.read import read_tile  # noqa: E402

DATA = Path(os.environ.get("HISTOFLOW_DATA", REPO.parent / "shared" / "data"))


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0); False where it cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@torch.inference_mode()
def model_alone(model, images: np.ndarray, batch_size: int) -> tuple[float, np.ndarray]:
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2)
    model = model.eval().to(memory_format=torch.channels_last)
    feats = []
    t0 = time.perf_counter()
    for s in range(0, len(x_all), batch_size):
        x = x_all[s : s + batch_size].contiguous(memory_format=torch.channels_last)
        feats.append(model.features(x).float())
    return time.perf_counter() - t0, torch.cat(feats).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slide", default=str(DATA / "wsi" / "cmu-1-small-region.svs"))
    ap.add_argument("--encoder", default="vit-s16-imagenet")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--workers", type=int, default=None, help="reader threads [default: embed's, predict.pipeline.reader_threads]"
    )
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    cfg = SlidePredictConfig(tissue_threshold=0.0, batch_size=args.batch_size, workers=args.workers)
    emb = encoder_embedder(args.encoder, "random", cfg)
    slide = open_slide(args.slide)
    plan = plan_tiles(slide, emb.tile_px, max(slide.mpp, emb.mpp), cfg)
    images = np.stack([read_tile(slide, s) for s in plan.specs])  # the model-alone input, not timed
    slide.close()
    n = len(plan.specs)
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {"end_to_end": [], "model_alone": []}
    peaks: dict[str, float] = {"end_to_end": 0.0, "model_alone": 0.0}
    others: list[float] = []
    max_diff = 0.0
    reference = model_alone(emb.model, images, args.batch_size)[1]  # also the warm-up
    with tempfile.TemporaryDirectory() as tmp:

        def end_to_end(i: int) -> float:
            t0 = time.perf_counter()
            rep = embed_slide(emb, args.slide, Path(tmp) / f"run{i}")
            seconds = time.perf_counter() - t0
            assert rep["tiles"] == n and not rep["skipped_read_errors"], rep
            nonlocal max_diff
            got = np.load(Path(tmp) / f"run{i}" / rep["slide_id"] / "embeddings.npy")
            max_diff = max(max_diff, float(np.abs(got - reference).max()))
            return seconds

        def alone(i: int) -> float:
            return model_alone(emb.model, images, args.batch_size)[0]

        end_to_end(-1)  # warm-up: page cache, reader start-up
        can_reset = reset_peak_rss()
        for r in range(args.repeats):
            steps = [("end_to_end", end_to_end), ("model_alone", alone)]
            with Others() as o:
                for key, step in steps[::-1] if r % 2 else steps:
                    reset_peak_rss()
                    runs[key].append(step(r))
                    peaks[key] = max(peaks[key], peak_rss_mb())
            others.append(o.share)
    med = statistics.median
    ratios = [a / e for a, e in zip(runs["model_alone"], runs["end_to_end"])]
    out = {
        "bench": "embed",
        "slide": Path(args.slide).name,
        "encoder": args.encoder,
        "weights": "random",
        "tiles": n,
        "tile_px": emb.tile_px,
        "mpp": emb.mpp,
        "ratio": round(med(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "target_ratio": 0.85,
        "end_to_end_tiles_per_s": round(n / med(runs["end_to_end"]), 1),
        "model_alone_tiles_per_s": round(n / med(runs["model_alone"]), 1),
        "peak_rss_mb": {k: round(v, 1) for k, v in peaks.items()} if can_reset else "VmHWM cannot be reset here",
        "features_max_abs_diff_vs_tile_by_tile": float(f"{max_diff:.2g}"),
        "others_cpu_share": [round(med(others), 2), round(max(others), 2)],  # median, max
        "runs_s": {k: [round(v, 3) for v in vs] for k, vs in runs.items()},
        "note": "end to end includes the tissue mask, grid, reading, decoding and writing the outputs",
        "torch_threads": torch.get_num_threads(),
        "reader_threads": reader_threads(args.workers, emb.device),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
