"""Recipe sweep: named config variants x seeds, each a histoflow run (fit + evaluate), several
at a time. Written to rank recipe changes by their mean over seeds rather than by one run
(PCam val AUC moves by +-0.002 between seeds of the same recipe).

Run (a GPU box with many cores; on a 2-core CPU one run takes ~14 min). The sweep that chose
today's default recipe ran on one H100 with 16 cores, 3 seeds, 5-6 runs at a time:
    python bench/recipe_sweep.py bench/recipe_sweep_configs.json --recipe bench/recipe_sweep_base.yaml \
        --seeds 1,2,3 --parallel 6 --data $HISTOFLOW_DATA/pcam --out runs/sweep \
        --set train.precision=32-true --set train.deterministic=false --set train.accelerator=gpu
Each config is a list of `--set` overrides on the recipe (default configs/pcam_simple_cnn.yaml). Prints one JSON
line per run (best-epoch AUC, 8-view TTA AUC, last-epoch AUC) and a table of means at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys
from histoflow.config import load_config
from histoflow.workflows.run import run
run(load_config(sys.argv[1], json.loads(sys.argv[2])), sys.argv[3])
"""


def result(name: str, seed: int, out: Path, code: int, secs: float) -> dict:
    row = {"name": name, "seed": seed, "rc": code, "secs": round(secs)}
    try:
        metrics = json.loads((out / "metrics.json").read_text())
        history = list(csv.DictReader((out / "history.csv").read_text().splitlines()))
        row.update(
            best_epoch=metrics["epoch"],
            auc=metrics["val"]["auc"],
            tta=metrics.get("val_tta", {}).get("auc"),
            last=round(float(history[-1]["val_auc"]), 6),
        )
    except (OSError, KeyError, ValueError) as exc:
        row["error"] = f"{type(exc).__name__}: {exc} (see {out}.log)"
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", type=Path, help='JSON {"name": ["key=value", ...], ...}')
    ap.add_argument("--recipe", type=Path, default=REPO / "configs" / "pcam_simple_cnn.yaml")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--threads", type=int, default=3, help="torch threads per run")
    ap.add_argument("--data", default=None, help="data.path override")
    ap.add_argument("--out", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--set", dest="common", action="append", default=[], help="override for every run")
    args = ap.parse_args()
    configs = json.loads(args.configs.read_text())
    common = ([f"data.path={args.data}"] if args.data else []) + args.common
    jobs = [(name, sets, int(seed)) for seed in args.seeds.split(",") for name, sets in configs.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    running, rows = [], []
    while jobs or running:
        while jobs and len(running) < args.parallel:
            name, sets, seed = jobs.pop(0)
            out = args.out / f"{name}_s{seed}"
            overrides = [*common, f"seed={seed}", *sets]
            log = open(f"{out}.log", "w")
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(args.recipe), json.dumps(overrides), str(out)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            running.append((name, seed, out, proc, time.time(), log))
        for item in list(running):
            name, seed, out, proc, started, log = item
            if proc.poll() is not None:
                running.remove(item)
                log.close()
                rows.append(result(name, seed, out, proc.returncode, time.time() - started))
                print(json.dumps(rows[-1]), flush=True)
        time.sleep(1)
    (args.out / "sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{'config':28s} runs  auc mean (sd)     tta mean (sd)")
    for name in configs:
        done = [r for r in rows if r["name"] == name and "auc" in r]
        if len(done) >= 2:
            a, t = [r["auc"] for r in done], [r["tta"] for r in done if r["tta"] is not None]
            tta = f"{statistics.mean(t):.4f} ({statistics.stdev(t):.4f})" if len(t) >= 2 else "-"
            print(f"{name:28s} {len(done):4d}  {statistics.mean(a):.4f} ({statistics.stdev(a):.4f})  {tta}")


if __name__ == "__main__":
    main()
