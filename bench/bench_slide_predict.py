"""Slide prediction throughput: slide file -> probabilities, vs the model alone on the same tiles.

Run: PYTHONPATH=src python bench/bench_slide_predict.py [--checkpoint CKPT] [--repeats 9]
Prints one JSON line. For each case, `--repeats` rounds; each round runs one untimed model-alone
pass (after the idle wait, the second run of a plain pair tended to be the faster), then times
  end to end   tiles read and decoded from the slide file and scored: predict-slide's tile
               stream and model loop (predict.model_loop.run_model over
               predict.pipeline.SlideTileSource), readers opened as predict-slide opens them, with
               predict-slide's reader threads (--workers; default predict.pipeline.reader_threads:
               none on a CPU host whose cores the model's threads fill, so tiles are read between
               batches)
  model alone  the same model on the same tiles preloaded as one uint8 array (same batch size,
               same process, same threads)
as A B B A (B A A B in odd rounds), so a drift in the machine's speed within the round hits both.
It reports the median of the per-round ratios (model alone time / end-to-end time; 1.0 =
reading costs nothing) with its min and max, the median tiles/s of each, and every round.

Cases (same slide, 96 px tiles, 48 px overlap so there are enough tiles to time, tissue
threshold 0 = every grid position):
  resampled (the headline, `ratio`): 0.972 um/px, what a PCam-trained model needs: each tile
    is a 187 px region of level 0 (0.499 um/px), box-averaged 2 x 2 and interpolated to 96 px
    (tiling.read; bench/bench_resample.py compares it with area interpolation); 713 tiles
  native: 0.5 um/px, the slide's own level 0, no resizing; 2,700 tiles
Planning (tissue mask, grid) and the preloading are not timed. Model: the checkpoint given,
else an untrained PCam-sized simple_cnn (widths 16-128, depth 1): throughput does not depend
on the weights. `--serial` adds end-to-end runs with workers=0 to each round (with `--workers 2`:
reader threads and reading between batches in one run). Other processes' share of the CPUs
during each round is reported (`others_cpu_share`, from /proc); `--quiet 0.15` waits before each
round until they use under 15% (at most `--quiet-wait-s`), for figures from a shared machine.

Measured on 2026-12-01, 2-core AMD EPYC host (other jobs' CPU share 0.00-0.01), untrained
simple_cnn, 2 torch threads, `--repeats 9 --quiet 0.15`, three runs in a row:
  resampled 0.972 um/px: 0.71, 0.79, 0.79 (e.g. 1,563 vs 2,011 tiles/s)   target 0.9: NOT met
  native 0.5 um/px:      1.00, 0.90, 0.96
and a clean clone (git clone, make setup, then this command) right after: 0.82 (1,165 vs 1,458
tiles/s) and 0.99.
The same session, before the box path and the reader-thread rule (2 reader threads, area
interpolation): resampled 0.68 (1,049 vs 1,485 tiles/s), native 0.97. `--workers 2 --serial` in
one run: 2 reader threads 0.69, reading between batches 0.77 (resampled); 0.83 vs 0.91 (native).
The model alone ran at 1,400-2,100 tiles/s on this host from one run to the next.
Where the reading goes at 0.972 um/px (one thread, this slide, 713 tiles, 85-95 ms in all): JPEG
decode of the level-0 file tiles 38 ms (about 53 us a tile: each output pixel covers four level-0
pixels), the box path 19 ms (area interpolation took about 120 ms), assembling regions 8 ms,
opening the reader 8 ms, bookkeeping about 10 ms. The model's threads fill both cores, so reading
adds its own time to the model's (reader threads running beside it cost more: a preempted torch
thread stalls its partner at the next barrier). With the model at 0.5 ms a tile, the decode alone
is a tenth of that: 0.9 needs a core the model does not use (a cheaper decode does not get
there: see below). A bigger model (a
ResNet-50 costs tens of ms a tile on CPU) hides reading; beside a GPU the 2 reader threads run
ahead of the model.
Tried on 2026-12-01 and not adopted (same host):
  - DCT-domain 1/2 decode (simplejpeg/TurboJPEG, which needs an Adobe marker added to Aperio's
    RGB JPEG tiles): 119 us a 240 px file tile vs 149 us full decode + 16 us box average. Entropy
    decoding dominates, so it saves about 6 ms of the ~90 ms of reading.
  - One reader thread instead of none (`--workers 1 --serial`, three runs): 0.82, 0.85, 0.80 vs
    0.90, 0.91, 0.78 reading between batches. No gain.
  - OpenMP threads that sleep soon when idle, plus one reader thread that runs in their gaps.
    The OpenMP setting is read once, when torch loads, so it would be set process-wide by the
    predict-slide, embed and detect-mitoses verbs. Bench processes were interleaved with default
    ones (0 reader threads, OpenMP's default spin of 300,000):
      GOMP_SPINCOUNT=10000, 15 processes vs 19 default ones: ratio median 0.94 vs 0.90; end to
        end 1,242 vs 1,151 tiles/s; model alone 1,221 vs 1,245.
      The last 7 strict A/B pairs of those: 0.89 vs 0.91 (5 of the 7 pairs favoured the short
        spin).
      OMP_WAIT_POLICY=PASSIVE, 8 processes: 0.94, but end to end 1,143 vs 1,123 tiles/s (the
        model alone slowed instead).
    The gain is within this host's noise. Training the default simple_cnn was slower under
    either setting: 708 (spin 10000) and 637 (passive) vs 820 images/s, 4 processes each.
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
from histoflow.predict.pipeline import SlideTileSource, reader_threads  # noqa: E402
from histoflow.predict.tiles import open_reader_factory, plan_tiles  # noqa: E402
from histoflow.slide import open_slide  # noqa: E402
from histoflow.tiling.read import read_tile  # noqa: E402

DATA = Path(os.environ.get("HISTOFLOW_DATA", REPO.parent / "shared" / "data"))
CASES = {"resampled": 0.972, "native": 0.5}  # um/px of the tiles; the first is the headline


def cpu_ticks() -> tuple[int, int]:
    """(busy ticks of the whole machine, ticks of this process) so far; (0, 0) off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0
    return sum(fields) - fields[3] - fields[4], int(own[11]) + int(own[12])  # minus idle, iowait


class Others:
    """The share of the machine's CPUs that other processes used while a pair ran."""

    def __enter__(self):
        self.t0, self.ticks0 = time.perf_counter(), cpu_ticks()
        return self

    def __exit__(self, *exc) -> None:
        (busy0, own0), (busy1, own1) = self.ticks0, cpu_ticks()
        span = (time.perf_counter() - self.t0) * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
        self.share = max(0.0, (busy1 - busy0) - (own1 - own0)) / span if span > 0 else 0.0


def wait_for_quiet(limit: float, timeout_s: float) -> float:
    """Wait (up to timeout_s) until other processes use under `limit` of the CPUs for 1 s."""
    t0 = time.perf_counter()
    while True:
        with Others() as o:
            time.sleep(1.0)
        if o.share < limit or time.perf_counter() - t0 > timeout_s:
            return o.share


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
def model_alone(model, images: np.ndarray, batch_size: int, device) -> tuple[float, np.ndarray]:
    from histoflow.predict.patches import autocast_for

    x_all = torch.from_numpy(images).permute(0, 3, 1, 2)
    model = model.eval().to(device).to(memory_format=torch.channels_last)
    probs = []
    t0 = time.perf_counter()
    for s in range(0, len(x_all), batch_size):
        x = x_all[s : s + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        with autocast_for(device):
            probs.append(model.probabilities(model.head(model.features(x))).float().cpu())
    return time.perf_counter() - t0, torch.cat(probs).numpy()


class Case:
    """One resolution: its planned tiles, the preloaded copy, and the timings of each round."""

    def __init__(self, name: str, mpp: float, args, model, device):
        self.name, self.args, self.model, self.device = name, args, model, device
        self.cfg = SlidePredictConfig(
            mpp=mpp, tissue_threshold=0.0, overlap_px=args.overlap_px, batch_size=args.batch_size, workers=args.workers
        )
        slide = open_slide(args.slide)
        self.plan = plan_tiles(slide, args.tile_px, max(slide.mpp, mpp), self.cfg)
        self.n = len(self.plan.specs)
        # the model-alone input: each tile read on its own (the reference pixels), not timed
        self.images = np.stack([read_tile(slide, s) for s in self.plan.specs])
        slide.close()
        self.reference = model_alone(model, self.images, args.batch_size, device)[1]
        self.runs: dict[str, list[float]] = {"end_to_end": [], "model_alone": [], "serial": []}
        self.others: list[float] = []  # other processes' CPU share during each pair
        self.wait: list[float] = []
        self.max_diff = 0.0

    def end_to_end(self, workers: int | None = None) -> float:
        cfg = self.cfg if workers is None else self.cfg.model_copy(update={"workers": workers})
        source = SlideTileSource(self.args.slide, self.plan.specs, open_reader_factory(self.args.slide, cfg))
        try:
            res = run_model(self.model, source, self.args.tile_px, cfg, self.device)
        finally:
            source.close()
        assert len(res.indices) == self.n and not res.errors, res.errors[:3]
        self.max_diff = max(self.max_diff, float(np.abs(res.probs - self.reference).max()))
        if workers is None:
            self.wait.append(res.wait_s)
        return res.total_s

    def alone(self) -> float:
        return model_alone(self.model, self.images, self.args.batch_size, self.device)[0]

    def round(self, order: int) -> None:
        """One pair, timed as A B B A (or B A A B in odd rounds): a drift in the machine's speed
        during the round then hits both sides alike. An untimed model-alone run first: with plain
        alternating pairs, whichever ran second after the --quiet sleep tended to be faster."""
        if self.args.quiet is not None:
            wait_for_quiet(self.args.quiet, self.args.quiet_wait_s)
        self.alone()
        steps = [("end_to_end", self.end_to_end), ("model_alone", self.alone)]
        first, second = steps[::-1] if order % 2 else steps
        times: dict[str, float] = {"end_to_end": 0.0, "model_alone": 0.0}
        with Others() as others:
            for key, step in (first, second, second, first):
                times[key] += step() / 2
        for key, t in times.items():
            self.runs[key].append(t)
        self.others.append(others.share)
        if self.args.serial:
            self.runs["serial"].append(self.end_to_end(workers=0))

    def summary(self) -> dict:
        med = statistics.median
        e2e, alone = self.runs["end_to_end"], self.runs["model_alone"]
        ratios = [a / e for a, e in zip(alone, e2e)]
        out = {
            "tiles": self.n,
            "mpp": self.plan.specs[0].mpp,
            "level": self.plan.level,
            "read_px": self.plan.read_px,
            "ratio": round(med(ratios), 3),  # median of the per-pair ratios
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "ratio_of_medians": round(med(alone) / med(e2e), 3),
            "end_to_end_tiles_per_s": round(self.n / med(e2e), 1),
            "model_alone_tiles_per_s": round(self.n / med(alone), 1),
            "model_waited_s": round(med(self.wait), 3),
            "others_cpu_share": [
                round(med(self.others), 2),
                round(max(self.others), 2),
            ],  # median, max  # median time the model waited for tiles
            "probs_max_abs_diff_vs_tile_by_tile": float(f"{self.max_diff:.2g}"),
            "runs_s": {k: [round(v, 3) for v in vs] for k, vs in self.runs.items() if vs},
        }
        if self.runs["serial"]:
            out["serial_tiles_per_s"] = round(self.n / med(self.runs["serial"]), 1)
            out["ratio_serial"] = round(med([a / s for a, s in zip(alone, self.runs["serial"])]), 3)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slide", default=str(DATA / "wsi" / "cmu-1-small-region.svs"))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--tile-px", type=int, default=96)
    ap.add_argument("--overlap-px", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="reader threads [default: predict-slide's, predict.pipeline.reader_threads]",
    )
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    ap.add_argument("--serial", action="store_true", help="also time workers=0 (no reader threads)")
    ap.add_argument(
        "--quiet",
        type=float,
        default=None,
        metavar="SHARE",
        help="before each pair, wait until other processes use under SHARE of the CPUs (e.g. 0.1)",
    )
    ap.add_argument("--quiet-wait-s", type=float, default=120.0, help="longest wait for --quiet per pair")
    args = ap.parse_args()

    model, model_name = load_model(args.checkpoint)
    device = device_of(None)
    load_before = os.getloadavg()
    cases = [Case(name, CASES[name], args, model, device) for name in args.cases.split(",")]
    for case in cases:  # warm-up, not counted: page cache, torch kernels, reader start-up
        case.end_to_end()
        case.alone()
        case.wait.clear()
    for r in range(args.repeats):  # rounds interleave the cases too: load drift hits all alike
        for case in cases:
            case.round(r)
    summaries = {c.name: c.summary() for c in cases}
    head = summaries[cases[0].name]
    reader = open_reader_factory(args.slide, cases[0].cfg)()
    import cv2

    out = {
        "bench": "slide_predict",
        "slide": Path(args.slide).name,
        "headline": cases[0].name,
        "ratio": head["ratio"],
        "ratio_min": head["ratio_min"],
        "ratio_max": head["ratio_max"],
        "end_to_end_tiles_per_s": head["end_to_end_tiles_per_s"],
        "model_alone_tiles_per_s": head["model_alone_tiles_per_s"],
        "cases": summaries,
        "tile_px": args.tile_px,
        "overlap_px": args.overlap_px,
        "model": model_name,
        "device": str(device),
        "reader": f"{type(reader).__name__} ({getattr(reader, 'decoder', reader.backend)})",
        "torch_threads": torch.get_num_threads(),
        "reader_threads": reader_threads(cases[0].cfg.workers, device),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
    }
    reader.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
