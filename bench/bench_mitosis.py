"""Mitosis detection throughput on a slide vs the window classifier alone on the same windows.

Run: PYTHONPATH=src python bench/bench_mitosis.py --checkpoint DETECTOR.pt [--repeats 3]
Prints one JSON line: tissue mm^2/s and windows/s end to end (tiles read by reader threads,
candidate nuclei found, windows cut, scored in batches, NMS, hotspot, outputs) and windows/s of
the classifier alone on the same windows preloaded as one uint8 array (same batch size, same
process, same run), and their ratio (the issue's target: >= 0.85).

Slide: the real Aperio CMU-1-Small-Region (0.499 um/px), upsampled 2x to the detector's
0.25 um/px (--resample): the only H&E slide in ../shared/data. Its detections mean nothing
(skin, no mitosis labels, upsampled): only the speed is measured here.
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

import numpy as np  # noqa: E402

from histoflow.config.slides import SlidePredictConfig  # noqa: E402
from histoflow.predict.mitosis import MitosisDetector  # noqa: E402
from histoflow.predict.mitosis_slide import detect_slide  # noqa: E402
from histoflow.predict.pipeline import SlideTileSource, stream_batches  # noqa: E402
from histoflow.predict.tiles import open_reader_factory, plan_tiles  # noqa: E402

DATA = Path(os.environ.get("HISTOFLOW_DATA", REPO.parent / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True, help="detector.pt from `histoflow mitosis evaluate`")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile-px", type=int, default=512)
    args = parser.parse_args()
    slide = DATA / "wsi" / "cmu-1-small-region.svs"
    if not slide.is_file():
        print(json.dumps({"bench": "mitosis_slide", "skipped": f"no slide at {slide}"}))
        return
    detector = MitosisDetector.from_checkpoint(args.checkpoint)
    cfg = SlidePredictConfig(allow_resample=True, mpp=detector.mpp, overlap_px=detector.window_px)
    # the same windows, preloaded: every tile's proposals cut once, outside the timed loop
    reader = open_reader_factory(str(slide), cfg)()
    plan = plan_tiles(reader, args.tile_px, detector.mpp, cfg)
    source = SlideTileSource(str(slide), plan.specs, open_reader_factory(str(slide), cfg))
    box = (0, 0, args.tile_px, args.tile_px)
    windows = np.concatenate(
        [
            detector.prepare(img, detector.mpp, box)[1]
            for b in stream_batches(source, args.tile_px, 64, 2)
            for img in b.images
        ]
    )
    source.close()
    reader.close()
    end_to_end, alone = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            report = detect_slide(detector, slide, out, cfg, tile_px=args.tile_px)
        end_to_end.append(report)
        started = time.perf_counter()
        detector.score_windows(windows)
        alone.append(len(windows) / (time.perf_counter() - started))
    e2e = statistics.median(r["windows_per_s"] for r in end_to_end)
    model = statistics.median(alone)
    print(
        json.dumps(
            {
                "bench": "mitosis_slide",
                "slide": slide.name,
                "tiles": end_to_end[0]["tiles"],
                "windows": end_to_end[0]["windows"],
                "mm2_per_s": statistics.median(r["mm2_per_s"] for r in end_to_end),
                "windows_per_s_end_to_end": e2e,
                "windows_per_s_classifier_alone": round(model, 1),
                "ratio": round(e2e / model, 3),
                "target": 0.85,
                "torch_threads": __import__("torch").get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
