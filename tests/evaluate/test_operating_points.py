"""Operating points, bootstrap CIs and patient/slide aggregation on inputs with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from histoflow.evaluate.aggregate import aggregate_groups, group_level_metrics
from histoflow.evaluate.metrics import compute_metrics
from histoflow.evaluate.operating import bootstrap_ci, operating_points, rates_at
from histoflow.evaluate.run import clinical_results


def _point(ops, name):
    return next(p for p in ops["points"] if p["name"] == name)


def test_sln_headline_at_full_sensitivity():
    # 5 positives; 10 negatives of which 4 score below the lowest positive: sensitivity 1.0 spares 40%
    pos = [0.6, 0.7, 0.8, 0.9, 0.95]
    neg = [0.1, 0.2, 0.3, 0.4, 0.65, 0.7, 0.75, 0.85, 0.9, 0.99]
    y = np.array([1] * 5 + [0] * 10)
    p = np.array(pos + neg)
    top = _point(operating_points(y, p), "sensitivity 1")
    assert top["threshold"] == pytest.approx(0.6)
    assert top["sensitivity"] == 1.0
    assert top["negatives_spared"] == pytest.approx(0.4) and top["specificity"] == pytest.approx(0.4)
    assert (top["tp"], top["fn"], top["tn"], top["fp"]) == (5, 0, 4, 6)
    assert top["npv"] == 1.0 and top["ppv"] == pytest.approx(5 / 11, abs=1e-6)
    assert top["workload_spared"] == pytest.approx(4 / 15, abs=1e-6)


def test_youden_and_user_threshold_rows():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.45, 0.4, 0.8, 0.9])
    ops = operating_points(y, p, threshold=0.3)
    names = [row["name"] for row in ops["points"]]
    assert names == ["sensitivity 1", "sensitivity 0.99", "sensitivity 0.95", "Youden's J", "threshold 0.3"]
    youden = _point(ops, "Youden's J")
    # J = sens + spec - 1 is highest at 0.8 (2/3 + 1 - 1) or 0.4 (1 + 2/3 - 1): both 2/3
    assert youden["sensitivity"] + youden["specificity"] - 1 == pytest.approx(2 / 3, abs=1e-6)
    user = _point(ops, "threshold 0.3")
    assert (
        user["threshold"] == 0.3
        and user["sensitivity"] == 1.0
        and user["specificity"] == pytest.approx(2 / 3, abs=1e-6)
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=2, max_size=60),
    st.sampled_from([1.0, 0.99, 0.95, 0.5]),
)
def test_targeted_threshold_reaches_its_sensitivity(pairs, target):
    y = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    ops = operating_points(y, p, sensitivities=(target,))
    if len(set(y)) < 2:
        assert ops["notes"] and all(row["name"].startswith("threshold") for row in ops["points"])
        return
    row = ops["points"][0]
    assert row["sensitivity"] >= target - 1e-9
    # and it is the highest such threshold: any higher score as threshold loses sensitivity
    higher = np.unique(p[p > row["threshold"]])
    if len(higher):
        assert rates_at(y, p, higher[0])["sensitivity"] < target


def test_single_class_is_said_not_nan():
    y = np.zeros(12, dtype=int)
    p = np.linspace(0, 1, 12)
    probs = np.stack([1 - p, p], 1)
    result = compute_metrics(y, probs, ["0", "1"])
    result.update(clinical_results(y, probs, ["0", "1"], n_boot=50))
    assert result["auc"] is None and any("undefined" in n for n in result["notes"])
    assert result["operating_points"]["notes"]
    assert result["ci"]["auc"] is None and any("AUC" in n for n in result["ci"]["notes"])
    assert _point(result["operating_points"], "threshold 0.5")["sensitivity"] is None
    json.dumps(result, allow_nan=False)  # a NaN anywhere would raise


def test_empty_predictions():
    y = np.zeros(0, dtype=int)
    probs = np.zeros((0, 2))
    result = compute_metrics(y, probs, ["0", "1"])
    result.update(clinical_results(y, probs, ["0", "1"]))
    assert result["n"] == 0 and result["notes"]
    assert result["calibration"]["ece"] is None
    assert operating_points(y, y.astype(float)) == {"points": [], "notes": ["no predictions: no operating points"]}
    assert bootstrap_ci(y, y.astype(float), {})["notes"]
    json.dumps(result, allow_nan=False)


def _clustered(seed=0, n_patients=12, per=40):
    """Patches of a patient share its label and a patient-level score shift (correlated patches)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_patients) % 2, per)
    shift = np.repeat(rng.normal(0, 1.2, n_patients), per)
    score = 1 / (1 + np.exp(-(labels * 1.5 - 0.75 + shift + rng.normal(0, 0.3, len(labels)))))
    return labels, score, np.repeat([f"p{i}" for i in range(n_patients)], per)


def test_bootstrap_is_seeded_and_grouping_widens_clustered_intervals():
    y, p, patients = _clustered()
    a = bootstrap_ci(y, p, {"t": 0.5}, n_boot=200, seed=1)
    b = bootstrap_ci(y, p, {"t": 0.5}, n_boot=200, seed=1)
    assert a == b
    grouped = bootstrap_ci(y, p, {"t": 0.5}, groups=patients, n_boot=200, seed=1)
    assert grouped["grouped_by"] == "patient" and grouped["n_groups"] == 12
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    # 12 patients are far fewer independent cases than 480 patches: the honest interval is wider
    assert width(grouped["auc"]) > 1.5 * width(a["auc"])
    auc = compute_metrics(y, np.stack([1 - p, p], 1), ["0", "1"])["auc"]
    assert grouped["auc"][0] <= auc <= grouped["auc"][1]


def test_patient_level_aggregation():
    y = np.array([0, 0, 1, 0, 0, 0])
    p = np.array([0.1, 0.2, 0.9, 0.3, 0.2, 0.1])
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    table = aggregate_groups(y, p, groups, top_fraction=0.1)
    a, b = table.set_index("group").loc["a"], table.set_index("group").loc["b"]
    assert a["label"] == 1 and a["n_positive"] == 1 and a["score"] == pytest.approx(0.9)  # top-1 of 3
    assert b["label"] == 0 and b["score"] == pytest.approx(0.3)
    result = group_level_metrics(y, p, groups, "patient")
    assert result["n"] == 2 and result["auc"] == 1.0 and len(result["groups"]) == 2
    json.dumps(result, allow_nan=False)


def test_clinical_results_group_by_patient_column():
    import pandas as pd

    y, p, patients = _clustered(n_patients=6, per=10)
    groups = pd.DataFrame({"patient": patients, "slide": ""})
    out = clinical_results(y, np.stack([1 - p, p], 1), ["0", "1"], groups=groups, n_boot=100)
    assert out["ci"]["grouped_by"] == "patient"
    assert list(out["aggregate"]) == ["patient"]  # slide column is empty: no slide level
    assert out["aggregate"]["patient"]["n"] == 6
