"""What `make demo` runs: the main job on the real PCam patches.

Each step prints the CLI command that does the same thing alone, so the demo doubles as a tour.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from histoflow.paths import data_root as default_data_root

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


def run_demo(data_root: Path | None, out: Path, console: Console) -> int:
    from histoflow.data.manifest import read_manifest
    from histoflow.data.summary import summarize
    from histoflow.data.verify import verify_manifest
    from histoflow.cli import print_summary

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
    print_summary(summary)
    (out / "data").mkdir(parents=True, exist_ok=True)
    manifest.to_csv(out / "data" / "manifest.csv")
    (out / "data" / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"data step took {time.perf_counter() - start:.1f} s; outputs in {out}")
    return 0
