"""The evaluation report as a person meets it: made from a real (tiny) run, opened in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from histoflow.core.errors import DataError
from histoflow.evaluate.report import metrics_section
from histoflow.evaluate.run_folder import load_run
from histoflow.workflows.report import build_report
from tests.conftest import need_data


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-epoch, 32 px simple CNN on 40 + 40 real PCam patches (about 10 s on a CPU)."""
    from histoflow.config import load_config
    from histoflow.workflows.run import run

    pcam = need_data("pcam")
    cfg = load_config(
        None,
        [
            f"data.path={pcam}",
            "data.max_per_split=40",
            "data.image_px=32",
            "data.verify=false",
            "model.params={widths: [8, 16]}",
            "train.epochs=2",
            "data.num_workers=0",
            "name=tiny",
        ],
    )
    run_dir = run(cfg, tmp_path_factory.mktemp("runs") / "tiny", quiet=True)
    build_report(run_dir, gallery_n=16)
    return run_dir


def _copy(run_dir, dest):
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("tb", "*.ckpt", "report.html"))
    return dest


def _text(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


def test_report_holds_every_section(tiny_run):
    html = (tiny_run / "report.html").read_text()
    text = _text(html)
    for heading in (
        "Data and splits",
        "Training",
        "Evaluation: val split",
        "Operating points (val)",
        "Grad-CAM gallery",
        "Environment",
        "Resolved config",
    ):
        assert heading in text, heading
    for row in (
        "sensitivity 1",
        "sensitivity 0.99",
        "sensitivity 0.95",
        "Youden&#x27;s J",
        "threshold 0.5",
        "negatives spared",
        "NPV",
        "PPV",
        "expected calibration error",
        "percentile bootstrap",
    ):
        assert row in text, row
    assert html.count("data:image/png;base64,") >= 6  # curves, ROC, PR, confusion, reliability, gallery
    assert "http://" not in text and "https://" not in text  # nothing to fetch: opens offline
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["environment"]["versions"]["torch"] in text
    assert (tiny_run / "explain" / "gallery.csv").is_file()
    json.dumps(metrics, allow_nan=False)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("chromium not installed (Debian: apt-get install -y chromium): cannot render the report")


def _chrome(binary, tmp_path, *args):
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,3000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium(tiny_run, tmp_path):
    from PIL import Image

    binary = _chromium()
    # a copy with a probe script: after load, count images that decoded and tables in the DOM
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load',()=>{const im=[...document.images];"
        "const ok=im.filter(i=>i.complete&&i.naturalWidth>0).length;const d=document.createElement('div');"
        "d.id='probe';d.textContent='PROBE images '+ok+'/'+im.length+' tables '+"
        "document.querySelectorAll('table').length;document.body.appendChild(d);});</script>"
    )
    probe.write_text((tiny_run / "report.html").read_text().replace("</body>", script + "</body>"))
    dom = _chrome(binary, tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    found = re.search(r"PROBE images (\d+)/(\d+) tables (\d+)", dom.stdout)
    assert found, f"page did not run its probe; stderr: {dom.stderr[-500:]}"
    ok, total, tables = map(int, found.groups())
    assert total >= 6 and ok == total, f"{total - ok} of {total} images did not render"
    assert tables >= 4

    shot = tmp_path / "report.png"
    _chrome(binary, tmp_path, f"--screenshot={shot}", (tiny_run / "report.html").as_uri())
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (3000, 1200)
    assert (np.abs(img - 255).sum(2) > 30).mean() > 0.05, "screenshot is (nearly) blank"
    heading = (np.abs(img - [122, 47, 99]).sum(2) < 40).sum()  # the report's heading colour
    # Grad-CAM heat: the JET map's red blended over tissue; no plot or table of the page uses it
    heat = ((img[..., 0] > 180) & (img[..., 1] < 120) & (img[..., 2] < 100)).sum()
    assert heading > 500, "headings not drawn"
    assert heat > 200, "no Grad-CAM overlay visible"
    shutil.copy(shot, tiny_run / "report_screenshot.png")  # for a person to look at


def test_compare_two_runs_side_by_side(tiny_run, tmp_path):
    other = _copy(tiny_run, tmp_path / "tiny_b")
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg.update(name="tiny_b", seed=7)
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = build_report([tiny_run, other], tmp_path / "compare.html", explain=False)
    text = _text(out.read_text())
    assert "histoflow comparison: tiny vs tiny_b" in text
    assert "Side by side (val split)" in text and "specificity at sensitivity 1" in text
    assert re.search(r"<td class=\"l\">seed</td><td>42</td><td>7</td>", text)
    assert text.count("Run: ") == 2
    assert "evaluated on the same 40 val images" in text


def test_run_folder_missing_files(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path / "run")
    (run / "history.csv").unlink()
    shutil.rmtree(run / "report")
    html = _text(build_report(run, explain=False).read_text())
    assert "missing: history.csv" in html and "ROC curve, val: not available" in html
    (run / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="metrics.json: not valid JSON"):
        load_run(run)
    (run / "metrics.json").unlink()
    with pytest.raises(DataError, match=r"missing metrics.json.*histoflow evaluate"):
        build_report(run)
    with pytest.raises(DataError, match="no such directory"):
        build_report(tmp_path / "nowhere")


def _csv(tmp_path, rows, name="m.csv"):
    path = tmp_path / name
    path.write_text("path,label\n" + "\n".join(f"{p},{lbl}" for p, lbl in rows) + "\n")
    return path


def test_single_class_evaluation_says_auc_undefined(tiny_run, tmp_path):
    from histoflow.evaluate.run import evaluate_checkpoint

    ones = sorted((need_data("pcam", "valid") / "1").glob("*.jpg"))[:12]
    payload = evaluate_checkpoint(
        tiny_run / "checkpoints" / "best.pt", _csv(tmp_path, [(p, "1") for p in ones]), tmp_path / "eval"
    )
    result = payload["data"]
    assert result["auc"] is None and any("undefined" in n for n in result["notes"])
    json.loads((tmp_path / "eval" / "metrics.json").read_text())  # strict JSON: no NaN
    assert "NaN" not in (tmp_path / "eval" / "metrics.json").read_text()
    assert not (tmp_path / "eval" / "report" / "roc_data.png").exists()
    html = metrics_section(result)
    assert "ROC AUC</td><td>undefined" in html and "only class 1 present" in html
    assert result["specificity"] is None and "specificity</td><td>undefined" in html


def test_class_unknown_to_the_model(tiny_run, tmp_path):
    from histoflow.evaluate.run import evaluate_checkpoint

    img = sorted((need_data("pcam", "valid") / "1").glob("*.jpg"))[0]
    csv = _csv(tmp_path, [(img, "1"), (img, "metastasis")])
    with pytest.raises(DataError, match=r"m\.csv.*\['metastasis'\] are not known to the model"):
        evaluate_checkpoint(tiny_run / "checkpoints" / "best.pt", csv, tmp_path / "eval")


def test_empty_predictions_evaluate_without_crash(tiny_run, tmp_path):
    from histoflow.checkpoint import load_checkpoint
    from histoflow.data.datasets import PatchDataset
    from histoflow.data.manifest import Manifest
    from histoflow.evaluate.run import evaluate_split

    model, ckpt = load_checkpoint(tiny_run / "checkpoints" / "best.pt")
    empty = PatchDataset(Manifest(pd.DataFrame({"path": [], "label": []}), ["0", "1"]), image_px=32)
    result, probs = evaluate_split(model, ckpt, empty, tmp_path, "empty", tta=False, workers=0)
    assert probs.shape == (0, 2) and result["n"] == 0
    assert "no predictions" in " ".join(result["notes"])
    json.dumps(result, allow_nan=False)
    assert "undefined" in metrics_section(result)


def test_idc_patient_level_results(tiny_run, tmp_path):
    from histoflow.evaluate.run import evaluate_checkpoint

    payload = evaluate_checkpoint(tiny_run / "checkpoints" / "best.pt", need_data("idc", "8975"), tmp_path / "idc")
    result = payload["data"]
    patient = result["aggregate"]["patient"]
    assert patient["n"] == 1 and patient["groups"][0]["group"] == "8975"
    assert patient["groups"][0]["n_patches"] == 103 and patient["groups"][0]["n_positive"] == 51
    assert any("only 1 patient group" in n for n in result["ci"]["notes"])
    assert "patient" in pd.read_csv(tmp_path / "idc" / "predictions_data.csv").columns


def test_cli_report_and_calibrate(tiny_run, tmp_path):

    from histoflow.checkpoint import Checkpoint
    from histoflow.cli import app

    run = _copy(tiny_run, tmp_path / "run")
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", str(run)])
    assert result.exit_code == 0, result.output
    t = Checkpoint.read(run / "checkpoints" / "best.pt").temperature
    assert t > 0 and json.loads((run / "calibration.json").read_text())["temperature"] == pytest.approx(t)
    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "Temperature scaling" in (tmp_path / "r.html").read_text()
    missing = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such directory" in missing.output


def test_evaluate_and_predict_verbs_record_their_options(tiny_run, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from histoflow.cli import app

    runner = CliRunner()
    ckpt, valid = tiny_run / "checkpoints" / "best.pt", need_data("pcam", "valid")
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted((valid / "1").glob("*.jpg"))[:3]:
        (few / p.name).write_bytes(p.read_bytes())
    result = runner.invoke(app, ["predict", "--checkpoint", str(ckpt), str(few), "--out", str(tmp_path / "preds.csv")])
    assert result.exit_code == 0, result.output
    record = yaml.safe_load((tmp_path / "preds.command.yaml").read_text())
    assert record["command"].endswith("predict") and record["options"]["tta"] is False
    assert record["options"]["checkpoint"] == str(ckpt)
