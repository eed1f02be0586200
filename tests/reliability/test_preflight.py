"""The whole config is checked before any data work: an unknown model, missing files, a batch
augmentation that cannot run, a bad precision or monitor are all reported at once, and no run
folder is left behind; data errors found when the manifest is read leave none either (issue 15)."""

from __future__ import annotations

import pandas as pd
import pytest

from histoflow.core.errors import ConfigError, DataError
from histoflow.workflows.run import run as run_training
from tests.conftest import need_data
from tests.reliability.common import tiny


def test_unknown_model_name_fails_before_data_work_with_close_matches(tmp_path, monkeypatch):
    import importlib

    fit_module = importlib.import_module("histoflow.train.fit")
    monkeypatch.setattr(fit_module, "build_run_data", lambda *a, **k: pytest.fail("data was read"))
    with pytest.raises(ConfigError, match=r"model.name: unknown model 'simple_cn'.*simple_cnn"):
        run_training(tiny("model.name=simple_cn"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_every_problem_is_reported_at_once(tmp_path):
    cfg = tiny(
        "model.name=no_such_net",
        f"data.path={tmp_path / 'nowhere'}",
        f"model.weights={tmp_path / 'w.pt'}",
        "preprocess.stain_norm=macenko",
        f"preprocess.target={tmp_path / 'target.png'}",
        "augment.where=batch",
        "augment.gaussian_blur={p: 0.5}",
        "train.precision=fp12",
        "train.early_stopping={monitor: val_aucc}",
    )
    with pytest.raises(ConfigError) as err:
        run_training(cfg, tmp_path / "run")
    message = str(err.value)
    for expected in (
        "model.name",
        "data.path",
        "nowhere",
        "model.weights",
        "preprocess.target",
        "gaussian_blur",
        "train.precision",
        "early_stopping.monitor",
    ):
        assert expected in message, expected
    assert not (tmp_path / "run").exists()


def test_missing_label_column_leaves_no_run_folder(tmp_path):
    files = sorted(need_data("pcam", "valid", "0").glob("*.jpg"))[:8]
    pd.DataFrame({"path": [str(p) for p in files], "diagnosis": ["0"] * 8}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match="label"):
        run_training(tiny(data=tmp_path / "m.csv"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
