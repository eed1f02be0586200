"""Class: which class is "positive" in a binary task.

Sorting made `normal` the positive class of `metastasis`/`normal`: sensitivity, operating points,
ROC and the Grad-CAM "true positive" were all about normal tissue, and nothing said so.
"""

from __future__ import annotations

import json

import pytest
import torch

from histoflow.checkpoint import Checkpoint, save_checkpoint
from histoflow.config import ModelConfig
from histoflow.core.errors import CheckpointError, ConfigError
from histoflow.data.classes import guess_positive_class, positive_class_order
from histoflow.models.factory import create_model
from tests.reliability.tiny import error_line, invoke, pcam_folder, train


@pytest.mark.parametrize(
    "names, positive",
    [
        (["0", "1"], "1"),
        (["negative", "positive"], "positive"),
        (["benign", "malignant"], "malignant"),
        (["metastasis", "normal"], "metastasis"),
        (["normal", "Tumour"], "Tumour"),
        (["IDC", "non-IDC"], "IDC"),
        (["atypical", "normal"], "atypical"),
        (["stroma", "tumor"], "tumor"),
        (["cancer", "healthy"], "cancer"),
    ],
)
def test_clear_names_are_read(names, positive):
    assert guess_positive_class(names) == positive
    assert positive_class_order(names) == [n for n in names if n != positive] + [positive]


@pytest.mark.parametrize("names", [["epithelium", "stroma"], ["A", "B"], ["benign", "normal"], ["cancer", "tumour"]])
def test_unclear_names_are_refused_naming_both(names):
    with pytest.raises(ConfigError, match="data.positive_class") as exc:
        positive_class_order(names)
    assert all(repr(n) in str(exc.value) for n in names)


def test_setting_decides_and_is_checked():
    assert positive_class_order(["epithelium", "stroma"], "epithelium") == ["stroma", "epithelium"]
    assert positive_class_order(["0", "1"], "0") == ["1", "0"]
    with pytest.raises(ConfigError, match="'tumor' is not one of"):
        positive_class_order(["0", "1"], "tumor")
    with pytest.raises(ConfigError, match="binary tasks only"):
        positive_class_order(["a", "b", "c"], "a")
    assert positive_class_order(["a", "b", "c"]) == ["a", "b", "c"]  # multi-class: order untouched


def test_old_checkpoint_without_record_reads_the_second_class(tmp_path):
    cfg = {"name": "simple_cnn", "params": {"widths": [4, 8], "depth": 1}}
    model = create_model(ModelConfig.model_validate(cfg), 2)
    save_checkpoint(tmp_path / "old.pt", model, model_config=cfg, class_names=["benign", "malignant"], image_px=32)
    assert Checkpoint.read(tmp_path / "old.pt").positive_class == "malignant"
    model3 = create_model(ModelConfig.model_validate(cfg), 3)
    save_checkpoint(tmp_path / "m3.pt", model3, model_config=cfg, class_names=["a", "b", "c"], image_px=32)
    assert Checkpoint.read(tmp_path / "m3.pt").positive_class is None
    torch.save({**torch.load(tmp_path / "old.pt", weights_only=False), "positive_class": "benign"}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="inconsistent"):
        _ = Checkpoint.read(tmp_path / "bad.pt").positive_class


def test_metastasis_normal_run_is_about_metastasis(tmp_path):
    data = pcam_folder(tmp_path / "d", classes={"0": "normal", "1": "metastasis"})
    result = train(data, tmp_path / "run")
    assert result.exit_code == 0, result.output
    ckpt = Checkpoint.read(tmp_path / "run" / "checkpoints" / "best.pt")
    assert ckpt.class_names == ["normal", "metastasis"] and ckpt.positive_class == "metastasis"
    assert ckpt.get("positive_class") == "metastasis"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["positive_class"] == "metastasis"
    assert metrics["val"]["positive_class"] == "metastasis"
    assert metrics["val"]["operating_points"]["positive_class"] == "metastasis"
    # labels map by name: metastasis rows are label index 1 (the one logit)
    import pandas as pd

    preds = pd.read_csv(tmp_path / "run" / "predictions_val.csv")
    assert set(preds.columns) >= {"p_normal", "p_metastasis"}
    assert ((preds["label"] == 1) == preds["path"].str.contains("/metastasis/")).all()
    result = invoke("report", str(tmp_path / "run"), "--no-explain")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "run" / "report.html").read_text()
    assert "positive class" in html and "metastasis" in html


def test_unclear_binary_names_stop_training_with_the_fix(tmp_path):
    data = pcam_folder(tmp_path / "d", n_per_class=4, classes={"0": "stroma", "1": "epithelium"})
    line = error_line(train(data, tmp_path / "run"), "data.positive_class", "'epithelium'", "'stroma'")
    assert "Traceback" not in line
    result = train(data, tmp_path / "run2", "data.positive_class=epithelium")
    assert result.exit_code == 0, result.output
    assert Checkpoint.read(tmp_path / "run2" / "checkpoints" / "best.pt").class_names == ["stroma", "epithelium"]
