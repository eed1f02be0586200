"""Two real slides, tiny checkpoints for the three slide verbs, the CLI line of each verb and a
comparison of two output folders: what the scale-out tests (processes, Spark) share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from typer.testing import CliRunner

from histoflow.checkpoint import Checkpoint
from histoflow.config.mitosis import DetectConfig
from histoflow.predict.mitosis import save_detector
from histoflow.slide.synthetic import write_synthetic_slide
from tests.conftest import need_data
from tests.mitosis.test_detector import window_checkpoint
from tests.predict.test_slide import _tiny_checkpoint

SLIDE_IDS = ("cmu-1-small-region", "pyr")
# timings and the resume flag differ from run to run; everything else must not
VARIABLE = {"seconds", "tiles_per_s", "mm2_per_s", "windows_per_s", "resumed"}
FILES = {
    "predict-slide": ("tiles.parquet", "probabilities.npy", "slide.json", "tiles.geojson", "regions.geojson"),
    "embed": ("embeddings.npy", "tiles.parquet", "embed.json"),
    "detect-mitoses": ("detections.csv", "density.npy", "slide.json", "detections.geojson"),
}


def make_inputs(root: Path) -> dict:
    """The real CMU-1 region and a small pyramidal TIFF, and a checkpoint per verb."""
    root.mkdir(parents=True, exist_ok=True)
    pyr = write_synthetic_slide(root / "pyr.tif", 3000, 2000, mpp=0.25, tile_px=256, min_level_px=600, seed=5)
    window = Checkpoint.read(window_checkpoint(root / "w.pt", mpp=0.5))
    model = str(_tiny_checkpoint(root / "m.pt", mpp=0.972))
    return {
        "slides": [str(need_data("wsi", "cmu-1-small-region.svs")), str(pyr)],
        "predict-slide": model,
        "embed": model,
        # threshold 0: every proposal is a detection, so there are plenty to compare
        "detect-mitoses": str(save_detector(root / "d.pt", window, DetectConfig(nms_um=3.0), 0.0, "t")),
    }


def run_verb(verb: str, inputs: dict, out: Path, *extra: str) -> dict:
    """`histoflow --quiet VERB SLIDES --checkpoint ... --out OUT EXTRA...` through the real CLI."""
    from histoflow.cli import app

    args = ["--quiet", verb, *inputs["slides"], "--checkpoint", inputs[verb], "--out", str(out), *extra]
    if verb == "detect-mitoses":
        args += ["--kind", "slides", "--tile-px", "256"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = out / {"predict-slide": "summary.json", "embed": "embed_summary.json"}.get(verb, "summary.json")
    return json.loads(summary.read_text())


def strip(d):
    if isinstance(d, dict):
        return {k: strip(v) for k, v in d.items() if k not in VARIABLE}
    return d


def assert_same_outputs(verb: str, a: Path, b: Path) -> None:
    """Per slide, every output file of `verb` in `a` equals `b`'s (timings aside); and the
    combined detections.csv for detect-mitoses."""
    for sid in SLIDE_IDS:
        for name in FILES[verb]:
            pa, pb = a / sid / name, b / sid / name
            assert pa.is_file() and pb.is_file(), (pa, pb)
            if name.endswith(".parquet"):
                assert pq.read_table(pa).equals(pq.read_table(pb)), pa
            elif name.endswith(".npy"):
                np.testing.assert_array_equal(np.load(pa), np.load(pb), err_msg=str(pa))
            elif name.endswith(".csv"):
                pd.testing.assert_frame_equal(pd.read_csv(pa), pd.read_csv(pb))
            else:
                assert strip(json.loads(pa.read_text())) == strip(json.loads(pb.read_text())), pa
    if verb == "detect-mitoses":
        both = [pd.read_csv(d / "detections.csv") for d in (a, b)]
        pd.testing.assert_frame_equal(*both)
        assert len(both[0]) > 10 and set(both[0]["slide"]) == set(SLIDE_IDS)
        assert not both[0].duplicated().any()
