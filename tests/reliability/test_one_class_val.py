"""A validation split with one class has no AUC: refused before training with a message naming the
split and the fix, or (train.one_class_val: monitor_val_loss) selected on val_loss and said so,
never a silent val_auc of 0.0 (issue 15, item 4)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from histoflow.core.errors import DataError
from histoflow.workflows.run import run as run_training
from tests.conftest import need_data
from tests.reliability.common import tiny


def _one_class_val_csv(tmp_path):
    rows = []
    for label in ("0", "1"):
        files = sorted(need_data("pcam", "valid", label).glob("*.jpg"))
        rows += [(str(p), label, "train") for p in files[:16]]
        if label == "1":
            rows += [(str(p), label, "val") for p in files[16:24]]
    path = tmp_path / "one_class_val.csv"
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(path, index=False)
    return path


def test_one_class_val_split_is_refused_before_training(tmp_path):
    cfg = tiny(data=_one_class_val_csv(tmp_path))
    with pytest.raises(
        DataError, match=r"validation split has no image of class\(es\) \['0'\].*one_class_val=monitor_val_loss"
    ):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before a run folder was made


def test_one_class_val_split_allowed_selects_on_val_loss_and_says_so(tmp_path, caplog):
    cfg = tiny("train.one_class_val=monitor_val_loss", data=_one_class_val_csv(tmp_path))
    run = run_training(cfg, tmp_path / "run")
    history = pd.read_csv(run / "history.csv")
    assert "val_auc" not in history.columns and history["val_loss"].notna().all()  # no 0.0 AUC logged
    metrics = json.loads((run / "metrics.json").read_text())
    assert any("val_loss" in note and "'0'" in note for note in metrics["notes"])
    assert any("best.pt and early stopping used val_loss" in r.getMessage() for r in caplog.records)
    best = json.loads((run / "checkpoints" / "training_done.json").read_text())
    assert best["notes"] == metrics["notes"]
