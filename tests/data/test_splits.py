"""Splits are stratified, seeded, and never put one patient in two splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoflow.core.errors import ConfigError, DataError
from histoflow.data.manifest import Manifest, read_manifest
from histoflow.data.splits import kfold_manifests, split_manifest
from tests.conftest import need_data


def synthetic(n_patients=40, per_patient=10, seed=0) -> Manifest:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = str(int(rng.random() < 0.3))  # imbalanced, one label per patient
        rows += [{"path": f"/x/{p}_{i}.png", "label": label, "patient": f"P{p}"} for i in range(per_patient)]
    return Manifest(pd.DataFrame(rows), ["0", "1"])


def patients_per_split(m: Manifest) -> dict[str, set]:
    return {s: set(m.frame.loc[m.frame["split"] == s, "patient"]) for s in m.splits}


def assert_no_leak(m: Manifest) -> None:
    groups = patients_per_split(m)
    names = list(groups)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not groups[a] & groups[b], f"patients in both {a} and {b}: {groups[a] & groups[b]}"


@pytest.mark.parametrize("seed", range(5))
def test_grouped_split_never_leaks(seed):
    m = split_manifest(synthetic(seed=seed), 0.2, 0.2, seed=seed)
    assert set(m.splits) == {"train", "val", "test"}
    assert_no_leak(m)


def test_grouped_split_on_real_breakhis():
    m = split_manifest(read_manifest(need_data("breakhis")), 0.2, 0.2, seed=3)
    assert_no_leak(m)
    assert set(m.frame["split"]) == {"train", "val", "test"}


def test_ungrouped_split_is_stratified_and_deterministic():
    m = synthetic().subset(np.arange(400))
    m.frame["patient"] = ""
    a = split_manifest(m, 0.25, 0.25, group_by=None, seed=7)
    b = split_manifest(m, 0.25, 0.25, group_by=None, seed=7)
    c = split_manifest(m, 0.25, 0.25, group_by=None, seed=8)
    assert a.frame["split"].tolist() == b.frame["split"].tolist()
    assert a.frame["split"].tolist() != c.frame["split"].tolist()
    overall = (m.frame["label"] == "1").mean()
    for s in ("train", "val", "test"):
        frac = (a.split(s).frame["label"] == "1").mean()
        assert abs(frac - overall) < 0.03
    assert abs((a.frame["split"] == "test").mean() - 0.25) < 0.01


def test_kfold_grouped_covers_everything_once():
    m = synthetic(seed=1)
    folds = kfold_manifests(m, n_folds=5, seed=0)
    val_counts = np.zeros(len(m), int)
    for fold in folds:
        val_counts += (fold.frame["split"] == "val").to_numpy()
        assert_no_leak(fold)
    assert (val_counts == 1).all()


def test_split_errors():
    m = synthetic()
    with pytest.raises(ConfigError, match="leaves no training data"):
        split_manifest(m, 0.6, 0.5)
    with pytest.raises(ConfigError, match="group_by: column 'hospital' is not in the manifest"):
        split_manifest(m, 0.2, 0.2, group_by="hospital")
    one_patient = m.subset(np.arange(len(m)))
    one_patient.frame["patient"] = "P0"
    with pytest.raises(DataError, match="only 1 group"):
        split_manifest(one_patient, 0.2, 0.2, group_by="patient")
