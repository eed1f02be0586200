"""Every verb of the train, evaluate, data and system stages: one happy path and one bad input.

A bad input is exit code 2 with one `error:` line naming the file or the field (click's own
usage errors, for verbs without files, name the option). Verbs whose tests live beside their
library (explain, report, calibrate, normalize, data inspect) are covered there too.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from typer.testing import CliRunner

from histoflow.cli import app
from tests.conftest import need_data
from tests.helpers import TINY_CLI_RUN, sets

runner = CliRunner()
TINY = ["data.max_per_split=24", "data.verify=false", *TINY_CLI_RUN]


def _error_line(result, *words: str, one_line: bool = True) -> str:
    """The `error:` message; config validation lists one invalid field per line below it."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    text = lines[0] if one_line else result.output[result.output.index("error:") :]
    for word in words:
        assert word in text, text
    return text


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`histoflow train` on 24 + 24 real PCam patches, one epoch of two steps."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = runner.invoke(app, ["--quiet", "train", "--out", str(out), *sets(f"data.path={need_data('pcam')}", *TINY)])
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_complete_run(tiny_run):
    for name in ("config.yaml", "command.yaml", "metrics.json", "report.html", "checkpoints/best.pt"):
        assert (tiny_run / name).is_file(), name
    assert json.loads((tiny_run / "metrics.json").read_text())["val"]["n"] == 24


def test_train_bad_inputs(tmp_path):
    _error_line(runner.invoke(app, ["train", str(tmp_path / "nope.yaml")]), "nope.yaml")
    _error_line(
        runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--set", "train.epochs=0"]), "epochs", one_line=False
    )


def test_tune_one_trial(tmp_path):
    pytest.importorskip("optuna")
    raw = {
        "name": "tiny",
        "data": {
            "path": str(need_data("pcam")),
            "image_px": 32,
            "max_per_split": 24,
            "num_workers": 0,
            "verify": False,
        },
        "model": {"name": "simple_cnn", "params": {"widths": [8, 16], "depth": 1}},
        "train": {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 8, "scheduler": {"name": "cosine"}},
        "tune": {"train.batch_size": [8, 16], "baseline": False},
    }
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["--quiet", "tune", str(cfg), "--trials", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "trials: 1 complete" in result.output
    assert (tmp_path / "o" / "best.yaml").is_file() and (tmp_path / "o" / "trials.csv").is_file()


def test_tune_bad_config_file(tmp_path):
    _error_line(runner.invoke(app, ["tune", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]), "nope.yaml")


def test_evaluate_and_explain_and_calibrate(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoints" / "best.pt"
    result = runner.invoke(
        app,
        [
            "--quiet",
            "evaluate",
            "--checkpoint",
            str(ckpt),
            str(tiny_run / "splits.csv"),
            "--split",
            "val",
            "--out",
            str(tmp_path / "e"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["val"]["n"] == 24
    result = runner.invoke(
        app,
        [
            "--quiet",
            "explain",
            "--checkpoint",
            str(ckpt),
            str(tiny_run / "splits.csv"),
            "--split",
            "val",
            "--n",
            "4",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "gallery.png").is_file()
    result = runner.invoke(app, ["--quiet", "calibrate", str(tiny_run)])
    assert result.exit_code == 0 and "temperature" in result.output, result.output


def test_evaluate_explain_calibrate_bad_inputs(tmp_path):
    data = need_data("pcam", "valid")
    missing = tmp_path / "nope.pt"
    for verb in ("evaluate", "explain"):
        result = runner.invoke(app, [verb, "--checkpoint", str(missing), str(data), "--out", str(tmp_path / "o")])
        _error_line(result, "nope.pt")
    _error_line(runner.invoke(app, ["calibrate", str(tmp_path)]), "predictions_val.csv")


def test_report_of_a_run_and_of_no_run(tiny_run, tmp_path):
    result = runner.invoke(app, ["--quiet", "report", str(tiny_run), "--out", str(tmp_path / "r.html"), "--no-explain"])
    assert result.exit_code == 0, result.output
    assert "Evaluation: val split" in (tmp_path / "r.html").read_text()
    _error_line(runner.invoke(app, ["report", str(tmp_path / "nowhere")]), "nowhere")


def test_data_download_verifies_present_files(tmp_path, monkeypatch):
    """Offline: a file already present is checked against its checksum, not fetched again."""
    from histoflow.data import download

    payload = b"not really an HDF5 file"
    (tmp_path / "tiny.h5").write_bytes(payload)
    monkeypatch.setitem(
        download.DATASETS, "tinyset", ("http://example.invalid", {"tiny.h5": hashlib.md5(payload).hexdigest()})
    )
    result = runner.invoke(app, ["data", "download", "tinyset", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and "tiny.h5" in result.output


def test_data_download_unknown_dataset(tmp_path):
    _error_line(runner.invoke(app, ["data", "download", "imagenet", "--out", str(tmp_path)]), "imagenet")


def test_models_lists_and_rejects_a_missing_pattern():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and "simple_cnn" in result.output and "concat" in result.output
    bad = runner.invoke(app, ["models", "--timm"])
    assert bad.exit_code == 2 and "--timm" in bad.output


def test_doctor_rejects_an_unknown_option():
    bad = runner.invoke(app, ["doctor", "--gpu-only"])
    assert bad.exit_code == 2 and "--gpu-only" in bad.output


def test_demo_bad_override_names_the_field(tmp_path):
    """A typo in --set stops the demo with the field named (after the quick data step)."""
    import shutil

    pcam = tmp_path / "data" / "pcam"
    for split in ("train", "valid"):
        for label in ("0", "1"):
            folder = pcam / split / label
            folder.mkdir(parents=True)
            for src in sorted(need_data("pcam", "valid", label).glob("*.jpg"))[:3]:
                shutil.copy(src, folder / src.name)
    result = runner.invoke(
        app,
        [
            "--quiet",
            "demo",
            "--data-root",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "train.epoks=1",
        ],
    )
    _error_line(result, "epoks", one_line=False)
