"""Class: a checkpoint applied to images of another size or magnification.

A 96 px PCam model on 50 px IDC patches or 224 px BreakHis fields was resized silently (AUC 0.57,
`notes: []`). Now evaluate and predict say so (metrics.json, report, predict's command.yaml and
console), and `--size-policy raise` refuses such data.
"""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from tests.reliability.tiny import error_line, invoke, pcam_folder, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("size")
    data = pcam_folder(root / "pcam", n_per_class=12)  # 96 px patches, model input 32 px
    result = train(data, root / "run")
    assert result.exit_code == 0, result.output
    small = root / "idc_like"  # the same tissue at 50 px: another magnification to this model
    for path in sorted(data.rglob("*.jpg"))[:16]:
        out = small / path.parent.name / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).resize((50, 50)).save(out)
    return root, data, small


def test_same_size_data_has_no_note(run, tmp_path):
    root, data, _ = run
    ckpt = root / "run" / "checkpoints" / "best.pt"
    assert invoke("evaluate", "--checkpoint", str(ckpt), str(data), "--out", str(tmp_path)).exit_code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["notes"] == [] and not any("size" in n for n in metrics["data"]["notes"])


def test_other_size_is_noted_in_evaluate(run, tmp_path):
    root, _, small = run
    ckpt = root / "run" / "checkpoints" / "best.pt"
    result = invoke("evaluate", "--checkpoint", str(ckpt), str(small), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    note = metrics["notes"][0]
    assert "50x50 (16)" in note and "96x96" in note and "resized" in note and "--size-policy raise" in note
    assert note in metrics["data"]["notes"]  # the split's notes: what the report shows
    from histoflow.evaluate.report import metrics_section

    assert "50x50" in metrics_section(metrics["data"])


def test_other_size_is_noted_in_predict(run, tmp_path):
    root, _, small = run
    ckpt = root / "run" / "checkpoints" / "best.pt"
    out = tmp_path / "p.csv"
    result = invoke("predict", "--checkpoint", str(ckpt), str(small), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "50x50" in result.output
    record = yaml.safe_load((tmp_path / "p.command.yaml").read_text())
    assert "50x50" in record["results"]["notes"][0] and record["options"]["size_policy"] is None


@pytest.mark.parametrize("verb", ["evaluate", "predict"])
def test_raise_policy_refuses(run, tmp_path, verb):
    root, _, small = run
    ckpt = root / "run" / "checkpoints" / "best.pt"
    out = tmp_path / ("p.csv" if verb == "predict" else "ev")
    result = invoke(verb, "--checkpoint", str(ckpt), str(small), "--out", str(out), "--size-policy", "raise")
    error_line(result, "50x50", "96x96", "size policy: raise")
    assert not out.exists()


def test_unknown_policy_is_named(run, tmp_path):
    root, _, small = run
    ckpt = root / "run" / "checkpoints" / "best.pt"
    error_line(
        invoke(
            "evaluate",
            "--checkpoint",
            str(ckpt),
            str(small),
            "--out",
            str(tmp_path),
            "--size-policy",
            "stretch",
        ),
        "stretch",
        "resize",
    )
