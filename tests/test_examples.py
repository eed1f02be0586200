"""The examples run as written (the notebook API flow on real data)."""

from __future__ import annotations

import json
import subprocess
import sys

from histoflow.checkpoint import Checkpoint
from tests.conftest import REPO, need_data


def test_notebook_api_example_runs_end_to_end(tmp_path):
    need_data("pcam")
    need_data("wsi", "cmu-1-small-region.svs")
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "notebook_api.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert Checkpoint.read(tmp_path / "run" / "checkpoints" / "best.pt").mpp == 0.972
    assert (tmp_path / "run" / "data.csv").is_file() and "data.csv" in (tmp_path / "run" / "config.yaml").read_text()
    assert json.loads((tmp_path / "idc" / "metrics.json").read_text())["data"]["n"] == 103
    assert (tmp_path / "slides" / "cmu-1-small-region" / "heatmap.png").is_file()
    assert "slides complete 1" in result.stdout
