"""The histoflow CLI end to end on real data (typer's runner, the real functions)."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from histoflow.cli import app
from tests.conftest import need_data

runner = CliRunner()


def test_help_on_every_verb():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    verbs = [
        "doctor",
        "models",
        "train",
        "evaluate",
        "predict",
        "demo",
        "data",
        "explain",
        "report",
        "calibrate",
        "info",
        "tile",
        "normalize",
        "predict-slide",
        "embed",
        "train-mil",
        "tune",
        "study",
        "view",
    ]
    for verb in verbs:
        assert verb in result.output
        sub = runner.invoke(app, [verb, "--help"])
        assert sub.exit_code == 0, sub.output


def test_help_texts_keep_their_square_brackets():
    # rich markup once ate "[default: 0.5 unless ...]" written in a help text ("microns per pixel .")
    sub = runner.invoke(app, ["tile", "--help"], terminal_width=200)
    assert "[default: 0.5 unless --tile-um/--magnification]" in " ".join(sub.output.split())


def test_global_flags_work_after_the_verb(tmp_path):
    slide = str(need_data("wsi", "cmu-1-small-region.svs"))
    for args in (["info", slide, "-q"], ["-q", "info", slide], ["info", "--quiet", slide]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    nested = runner.invoke(app, ["data", "inspect", str(need_data("idc", "8975")), "--out", str(tmp_path), "-q"])
    assert nested.exit_code == 0, nested.output


def test_data_inspect_idc_writes_manifest_and_summary(tmp_path):
    result = runner.invoke(app, ["data", "inspect", str(need_data("idc", "8975")), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "format: idc" in result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_images"] == 103 and summary["patients"] == 1
    assert summary["image_sizes"]["50x50"] == 102
    assert (tmp_path / "manifest.csv").exists()
    record = yaml.safe_load((tmp_path / "command.yaml").read_text())  # what produced these files
    assert record["command"].endswith("data inspect")
    assert record["options"]["on_error"] == "raise" and record["options"]["seed"] == 42  # defaults resolved
    assert record["options"]["path"] == str(need_data("idc", "8975"))


def test_data_inspect_bad_folder_exit_code(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"xx")
    result = runner.invoke(app, ["data", "inspect", str(tmp_path)])
    assert result.exit_code == 2
    assert "broken.png" in result.output
    skipped = runner.invoke(app, ["data", "inspect", str(tmp_path), "--on-error", "skip"])
    assert skipped.exit_code == 2 and "every image was bad" in skipped.output


def test_doctor_reports_components():
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0
    for name in ("torch", "timm", "openslide", "accelerator", "java"):
        assert name in result.output


def test_demo_without_data_says_how_to_get_it(tmp_path):
    result = runner.invoke(app, ["demo", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "histoflow data download pcam" in result.output
    assert "HISTOFLOW_DATA=" in result.output


def test_demo_end_to_end_on_real_pcam_quick(tmp_path):
    """`make demo`'s code path (inspect -> train -> evaluate -> report -> predict), on a subset."""
    root = need_data("pcam").parent
    result = runner.invoke(
        app,
        [
            "--quiet",
            "demo",
            "--data-root",
            str(root),
            "--out",
            str(tmp_path),
            "--set",
            "data.max_per_split=200",
            "--set",
            "train.epochs=1",
            "--set",
            "model.params={widths: [8, 16], depth: 1}",
        ],
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "pcam_simple_cnn"
    assert (run / "metrics.json").exists() and (run / "report.html").exists()
    assert (tmp_path / "data" / "summary.json").exists()
    preds = (tmp_path / "predictions.csv").read_text().splitlines()
    assert preds[0].startswith("path,") and len(preds) > 10
    assert "val_tta: n 200" in result.output
