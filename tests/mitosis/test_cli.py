"""The mitosis verbs through the real CLI: help, detect-mitoses on images, and its refusals."""

from __future__ import annotations

import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from histoflow.checkpoint import Checkpoint
from histoflow.cli import app
from histoflow.config.mitosis import DetectConfig
from histoflow.predict.mitosis import save_detector
from tests.mitosis.synthetic import disks
from tests.mitosis.test_detector import window_checkpoint

runner = CliRunner()


def test_help_lists_the_mitosis_verbs():
    result = runner.invoke(app, ["mitosis", "--help"])
    assert result.exit_code == 0
    for verb in ("windows", "evaluate", "atypia-cv"):
        assert verb in result.output
    assert runner.invoke(app, ["detect-mitoses", "--help"]).exit_code == 0


def test_detect_mitoses_on_images_and_refusals(tmp_path):
    ckpt = Checkpoint.read(window_checkpoint(tmp_path / "w.pt"))
    detector = save_detector(tmp_path / "d.pt", ckpt, DetectConfig(), 0.0, "test")  # threshold 0: keep all
    Image.fromarray(disks()).save(tmp_path / "a.png")
    ok = runner.invoke(app, ["--quiet", "detect-mitoses", str(tmp_path / "a.png"), "--checkpoint", str(detector),
                             "--out", str(tmp_path / "out"), "--device", "cpu"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    table = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert list(table.columns) == ["image", "x", "y", "score", "p_atypical"] and len(table) == 3
    assert (tmp_path / "out" / "command.yaml").is_file()
    far = runner.invoke(app, ["detect-mitoses", str(tmp_path / "a.png"), "--checkpoint", str(detector),
                              "--out", str(tmp_path / "o2"), "--mpp", "0.5", "--device", "cpu"])  # fmt: skip
    assert far.exit_code == 2 and "--allow-resample" in far.output
    plain = window_checkpoint(tmp_path / "p.pt", classes=("0", "1"))
    wrong = runner.invoke(app, ["detect-mitoses", str(tmp_path / "a.png"), "--checkpoint", str(plain),
                                "--out", str(tmp_path / "o3"), "--device", "cpu"])  # fmt: skip
    assert wrong.exit_code == 2 and "not a mitosis model" in wrong.output
