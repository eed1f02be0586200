"""What `make demo` runs: the main job on the real PCam patches.

Each step prints the CLI command that does the same thing alone, so the demo doubles as a tour.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from histoflow.core.io import atomic_write_json
from histoflow.core.paths import data_root as default_data_root

HOW_TO_GET_DATA = """\
No PCam data found at {where}.
Get it one of these ways, then run `make demo` again:
  1. The official PCam HDF5 files (about 7 GB; CC0), verified by checksum:
       histoflow data download pcam --out {root}/pcam
  2. Any folder of patches laid out as pcam/<train|valid>/<0|1>/*.jpg, pointed at with
       HISTOFLOW_DATA=/path/to/folder make demo
"""


def find_pcam(root: Path) -> Path | None:
    pcam = root / "pcam"
    if (pcam / "train").is_dir() or any(pcam.glob("camelyonpatch_level_2_split_*_x.h5")):
        return pcam
    return None


def _recipe() -> Path:
    from histoflow.core.paths import find_recipe

    found = find_recipe("pcam_simple_cnn")
    if found is None:  # a source checkout has configs/, a wheel installs it under share/
        raise FileNotFoundError("the default recipe pcam_simple_cnn.yaml is not installed")
    return found


def run_demo(
    data_root: Path | None, out: Path, console: Console, overrides: list[str] | None = None, quiet: bool = False
) -> int:
    from histoflow.data.manifest import read_manifest
    from histoflow.data.summary import summarize
    from histoflow.data.verify import verify_manifest
    from histoflow.workflows.display import print_summary

    root = Path(data_root) if data_root else default_data_root()
    pcam = find_pcam(root)
    if pcam is None:
        console.print(HOW_TO_GET_DATA.format(where=root / "pcam", root=root), highlight=False, markup=False)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    console.rule("1. data: read, verify and summarise PCam")
    console.print(f"$ histoflow data inspect {pcam} --out {out / 'data'}", highlight=False, markup=False)
    manifest = verify_manifest(read_manifest(pcam), on_error="skip")
    summary = summarize(manifest)
    print_summary(console, summary)
    manifest.to_csv(out / "data" / "manifest.csv")
    atomic_write_json(out / "data" / "summary.json", summary)
    console.print(f"data step took {time.perf_counter() - start:.1f} s")

    run_dir = train_step(pcam, out, console, overrides or [], quiet)
    predict_step(root, pcam, run_dir, out, console, quiet)
    console.rule("done")
    console.print(
        f"total {time.perf_counter() - start:.0f} s. Outputs: {out}; open {run_dir / 'report.html'}", highlight=False
    )
    return 0


def train_step(pcam: Path, out: Path, console: Console, overrides: list[str], quiet: bool = False) -> Path:
    from histoflow.config import load_config
    from histoflow.workflows.display import print_metrics
    from histoflow.workflows.run import run

    run_dir = out / "pcam_simple_cnn"
    console.rule("2. train the default recipe on pcam/train, evaluate on pcam/valid (8-view TTA)")
    extra = "".join(f" --set {o}" for o in overrides)
    console.print(
        f"$ histoflow train pcam_simple_cnn --set data.path={pcam}{extra} --out {run_dir}",
        highlight=False,
        markup=False,
    )
    cfg = load_config(_recipe(), [f"data.path={pcam}", *overrides])
    if (run_dir / "metrics.json").exists():
        console.print(f"{run_dir} is complete: showing its results (delete it to train again)")
    else:
        started = time.perf_counter()
        from histoflow.train.resume import can_resume

        run(cfg, run_dir, resume=can_resume(run_dir), quiet=quiet)
        console.print(f"trained and evaluated in {time.perf_counter() - started:.0f} s")
    print_metrics(console, run_dir / "metrics.json")
    return run_dir


def predict_step(root: Path, pcam: Path, run_dir: Path, out: Path, console: Console, quiet: bool = False) -> None:
    from histoflow.predict.folder import predict_to_csv

    images = root / "kaggle_hcd"  # unlabelled Kaggle-format patches, when present
    if not images.is_dir():
        images = next(p for p in (pcam / "valid" / "1", pcam) if p.exists())
    console.rule("3. predict unlabelled patches")
    csv = out / "predictions.csv"
    console.print(
        f"$ histoflow predict --checkpoint {run_dir / 'checkpoints' / 'best.pt'} {images} --out {csv}",
        highlight=False,
        markup=False,
    )
    frame = predict_to_csv(run_dir / "checkpoints" / "best.pt", images, csv, tta=True, quiet=quiet)
    console.print(frame.head(5).to_string(index=False), highlight=False, markup=False)
    console.print(f"{len(frame)} predictions in {csv}")
