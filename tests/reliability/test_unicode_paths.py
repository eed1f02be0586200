"""Class: non-ASCII characters in data paths (accented folders, patient names) must work end to end.

Paths were kept in a numpy bytes array for memory (no per-row Python objects in workers), made
with numpy's ASCII-only cast: `Dätä/pätient é` crashed data inspect, train, predict and evaluate
with UnicodeEncodeError.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from histoflow.data.datasets import PatchDataset
from histoflow.data.manifest import read_manifest
from tests.reliability.tiny import error_line, invoke, pcam_folder, train


@pytest.fixture(scope="module")
def unicode_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("uni") / "Dätä" / "pätient é 病理"
    return pcam_folder(root, n_per_class=12, prefix="é_")


def test_dataset_keeps_paths_compact_and_exact(unicode_data):
    manifest = read_manifest(unicode_data)
    ds = PatchDataset(manifest, image_px=32)
    assert ds.paths.dtype.kind == "S"  # still one bytes array, not a list of str objects
    assert [ds.path(i) for i in range(len(ds))] == manifest.frame["path"].tolist()
    img, label = ds[0]
    assert img.shape == (3, 32, 32) and label in (0, 1)
    batch = ds.__getitems__([0, 1, 2])  # the batched fill path reads files by their bytes paths
    assert batch.images.shape == (3, 3, 32, 32)


def test_undecodable_file_name_is_named_with_the_fix(tmp_path, unicode_data):
    # a Latin-1 'café.jpg' copied onto a UTF-8 system: no table or CSV can hold its name as text
    for label in ("0", "1"):
        (tmp_path / label).mkdir()
        for src in sorted((unicode_data / label).iterdir())[:3]:
            (tmp_path / label / src.name).write_bytes(src.read_bytes())
    with open(bytes(tmp_path / "0") + b"/caf\xe9.jpg", "wb") as fh:
        fh.write(src.read_bytes())
    line = error_line(invoke("data", "inspect", str(tmp_path)), "caf\\xe9.jpg", "not valid UTF-8", "rename")
    assert "Traceback" not in line


def test_inspect_train_evaluate_predict_with_accents(unicode_data, tmp_path):
    result = invoke("data", "inspect", str(unicode_data))
    assert result.exit_code == 0, result.output
    run = tmp_path / "rün"
    result = train(unicode_data, run)
    assert result.exit_code == 0, result.output
    ckpt = run / "checkpoints" / "best.pt"
    result = invoke("evaluate", "--checkpoint", str(ckpt), str(unicode_data), "--out", str(tmp_path / "ëval"))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ëval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["data"]["n"] == 24
    preds = pd.read_csv(tmp_path / "ëval" / "predictions_data.csv")
    assert preds["path"].str.contains("pätient é 病理").all()
    out = tmp_path / "prédictions.csv"
    result = invoke("predict", "--checkpoint", str(ckpt), str(unicode_data), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 24
    # the record beside the CSV is readable text, not \xe4 escapes
    assert "Dätä" in (tmp_path / "prédictions.command.yaml").read_text(encoding="utf-8")
    assert np.isfinite(pd.read_csv(out)["p_1"]).all()
