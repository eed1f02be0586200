"""Slide-level metrics: known answers, rules chosen on validation slides, grouped bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from histoflow.core.errors import DataError
from histoflow.evaluate.slide_metrics import slide_level_metrics
from histoflow.evaluate.slide_stats import (
    classify,
    group_members,
    qwk,
    qwk_cut_points,
    rank_auc,
    resample,
    spearman,
)

BINARY = ["normal", "tumor"]
GRADES = ["g1", "g2", "g3"]


def _frames(scores: dict[str, list[float]], labels: list[str], slides=None, patients=None):
    slides = slides or [f"s{i}" for i in range(len(labels))]
    sc = pd.DataFrame({"slide": slides, "n_tiles": 5, **scores})
    lab = pd.DataFrame({"slide": slides, "label": labels})
    if patients is not None:
        lab["patient"] = patients
    return sc, lab


def test_separable_slides_have_auc_1_and_a_ci_that_brackets_it():
    sc, lab = _frames({"mean": [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]}, ["normal"] * 3 + ["tumor"] * 3)
    res = slide_level_metrics(sc, lab, BINARY, n_boot=200)
    m = res["aggregations"]["mean"]
    assert m["auc"] == 1.0
    assert m["auc_ci"][0] <= 1.0 <= m["auc_ci"][1]
    assert (res["n_slides"], res["n_positive"], res["positive_class"]) == (6, 3, "tumor")
    assert m["threshold"] == 0.5 and m["rule_from"] == "default"  # no validation slides
    assert m["accuracy"] == 1.0 and (m["tp"], m["tn"]) == (3, 3)
    assert "0.5" in res["decision_rule"]
    json.dumps(res, allow_nan=False)  # JSON-ready: no NaN anywhere


def test_overlapping_scores_have_an_auc_inside_its_ci():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 30)
    s = np.clip(0.4 + 0.2 * y + rng.normal(0, 0.2, len(y)), 0, 1)
    sc, lab = _frames({"max": s.tolist()}, [BINARY[v] for v in y])
    m = slide_level_metrics(sc, lab, BINARY, n_boot=300)["aggregations"]["max"]
    assert m["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    lo, hi = m["auc_ci"]
    assert lo < m["auc"] < hi and hi - lo > 0.05


def test_threshold_chosen_on_validation_is_applied_on_test():
    val_sc, val_lab = _frames(
        {"mean": [0.1, 0.2, 0.3, 0.4]}, ["normal", "normal", "tumor", "tumor"], ["v0", "v1", "v2", "v3"]
    )
    sc, lab = _frames({"mean": [0.15, 0.25, 0.35, 0.45]}, ["normal", "normal", "tumor", "tumor"])
    res = slide_level_metrics(sc, lab, BINARY, val_scores=val_sc, val_labels=val_lab, n_boot=50)
    m = res["aggregations"]["mean"]
    assert m["threshold"] == pytest.approx(0.3) and m["rule_from"] == "validation"  # Youden on val
    assert m["sensitivity"] == 1.0 and m["specificity"] == 1.0  # at 0.5 both tumours would be missed
    assert [r["predicted"] for r in res["slides"]] == ["normal", "normal", "tumor", "tumor"]
    assert all(r["correct"] for r in res["slides"])


def test_best_aggregation_is_named_by_validation_not_test():
    labels = ["normal", "normal", "tumor", "tumor"]
    # on validation "a" separates and "b" does not; on test the other way round
    val_sc, val_lab = _frames({"a": [0.1, 0.2, 0.8, 0.9], "b": [0.9, 0.1, 0.2, 0.8]}, labels, ["v0", "v1", "v2", "v3"])
    sc, lab = _frames({"a": [0.9, 0.1, 0.2, 0.8], "b": [0.1, 0.2, 0.8, 0.9]}, labels)
    res = slide_level_metrics(sc, lab, BINARY, val_scores=val_sc, val_labels=val_lab, n_boot=50)
    assert res["best"]["aggregation"] == "a" and res["best"]["by"] == "validation ROC AUC"
    assert res["aggregations"]["b"]["auc"] == 1.0 > res["aggregations"]["a"]["auc"]
    alone = slide_level_metrics(sc, lab, BINARY, n_boot=50)["best"]
    assert alone["aggregation"] == "b" and "optimistic" in alone["by"]


def test_qwk_of_a_known_confusion_equals_sklearn():
    y = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    pred = np.array([0, 1, 1, 2, 2, 2, 0, 0])
    want = cohen_kappa_score(y, pred, weights="quadratic")
    assert qwk(y, pred, 3) == pytest.approx(want)
    # through slide_level_metrics: scores that the default cuts (0.5, 1.5) read as `pred`
    sc, lab = _frames({"mean": pred.astype(float).tolist()}, [GRADES[v] for v in y])
    res = slide_level_metrics(sc, lab, GRADES, ordinal=True, n_boot=100)
    m = res["aggregations"]["mean"]
    assert m["quadratic_kappa"] == pytest.approx(want, abs=1e-6)
    assert m["accuracy"] == pytest.approx((y == pred).mean())
    assert m["cut_points"] == [0.5, 1.5] and m["rule_from"] == "default"
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert m["quadratic_kappa_ci"][0] <= m["quadratic_kappa"] <= m["quadratic_kappa_ci"][1]
    assert res["class_counts"] == {"g1": 3, "g2": 2, "g3": 3}
    assert "0.567" in res["reference"] and "not a result of this run" in res["reference"]


def test_cut_points_chosen_on_validation_are_applied_on_test():
    grades = ["g1", "g1", "g2", "g2", "g3", "g3"]
    # a model whose expected grade is compressed: the nearest-class cuts call nothing g3
    val_sc, val_lab = _frames({"mean": [0.1, 0.2, 0.5, 0.6, 0.9, 1.0]}, grades, [f"v{i}" for i in range(6)])
    sc, lab = _frames({"mean": [0.15, 0.3, 0.55, 0.7, 0.8, 1.2]}, grades)
    cuts = qwk_cut_points(np.array([0, 0, 1, 1, 2, 2]), val_sc["mean"].to_numpy(), 3)
    assert 0.2 < cuts[0] <= 0.5 and 0.6 < cuts[1] <= 0.9
    res = slide_level_metrics(sc, lab, GRADES, ordinal=True, val_scores=val_sc, val_labels=val_lab, n_boot=50)
    m = res["aggregations"]["mean"]
    assert m["rule_from"] == "validation" and m["cut_points"] == pytest.approx(cuts)
    assert m["validation_quadratic_kappa"] == pytest.approx(1.0)
    assert m["quadratic_kappa"] == pytest.approx(1.0) and m["accuracy"] == 1.0
    assert [r["predicted"] for r in res["slides"]] == grades
    default = slide_level_metrics(sc, lab, GRADES, ordinal=True, n_boot=50)["aggregations"]["mean"]
    assert default["quadratic_kappa"] < 1.0  # the default cuts would not have done it
    y, s = np.array([0, 0, 1, 1, 2, 2]), sc["mean"].to_numpy()
    assert m["spearman"] == pytest.approx(spearmanr(y, s).statistic)


def test_unlabelled_and_missing_slides_are_counted_and_listed():
    sc = pd.DataFrame({"slide": ["a", "b", "c", "u1"], "mean": [0.1, 0.9, 0.2, 0.5]})
    lab = pd.DataFrame(
        {"slide": ["a", "b", "c", "m1", "m2"], "label": ["normal", "tumor", "normal", "tumor", "normal"]}
    )
    res = slide_level_metrics(sc, lab, BINARY, n_boot=20)
    assert res["n_slides"] == 3
    assert res["unlabelled"] == {"n": 1, "slides": ["u1"]}
    assert res["missing"] == {"n": 2, "slides": ["m1", "m2"]}
    assert [r["slide"] for r in res["slides"]] == ["a", "b", "c"]


def test_patients_owning_several_slides_are_resampled_whole():
    labels = ["normal", "tumor"] * 6
    sc, lab = _frames({"mean": np.linspace(0, 1, 12).tolist()}, labels, patients=[f"p{i // 3}" for i in range(12)])
    res = slide_level_metrics(sc, lab, BINARY, n_boot=50)
    assert res["bootstrap"]["resampled"] == "patient" and res["bootstrap"]["n_units"] == 4
    assert res["slides"][0]["patient"] == "p0"
    one_each = lab.assign(patient=[f"q{i}" for i in range(12)])
    assert slide_level_metrics(sc, one_each, BINARY, n_boot=20)["bootstrap"]["resampled"] == "slide"
    # a resample holds all slides of a drawn patient or none of them
    members = group_members(lab["patient"].to_numpy(), 12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = resample(rng, members)
        counts = np.bincount(idx, minlength=12)
        for m in members:
            assert len(set(counts[m])) == 1


def test_fast_statistics_match_sklearn_and_scipy():
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 3, 40)
        s = rng.normal(y, 1.0).round(1)  # ties included
        pred = classify(s, [0.5, 1.5])
        assert qwk(y, pred, 3) == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic", labels=[0, 1, 2]))
        assert spearman(y, s) == pytest.approx(spearmanr(y, s).statistic)
        yb = (y > 0).astype(int)
        assert rank_auc(yb, s) == pytest.approx(roc_auc_score(yb, s))
    assert qwk(np.zeros(4, int), np.zeros(4, int), 3) is None  # undefined, not NaN
    assert rank_auc(np.ones(3, int), np.arange(3.0)) is None


def test_nominal_multiclass_is_said_not_scored_and_bad_labels_are_refused():
    sc, lab = _frames({"mean": [0.0, 1.0, 2.0]}, GRADES)
    res = slide_level_metrics(sc, lab, GRADES, ordinal=False)
    assert res["task"] == "multiclass" and res["aggregations"] == {} and "ordinal=True" in res["notes"][0]
    with pytest.raises(DataError, match="g4"):
        slide_level_metrics(sc, lab.assign(label=["g1", "g2", "g4"]), GRADES, ordinal=True)
    with pytest.raises(DataError, match="more than once"):
        slide_level_metrics(sc, pd.concat([lab, lab]), GRADES, ordinal=True)


def test_a_slide_without_an_external_score_is_left_out_of_that_column_only():
    sc, lab = _frames(
        {"mean": [0.1, 0.2, 0.8, 0.9], "attention_mil": [0.1, np.nan, 0.7, 0.9]}, ["normal", "normal", "tumor", "tumor"]
    )
    res = slide_level_metrics(sc, lab, BINARY, n_boot=20)
    assert res["aggregations"]["mean"]["n"] == 4 and res["aggregations"]["attention_mil"]["n"] == 3
    assert any("attention_mil: 1 slide(s)" in n for n in res["notes"])
    json.dumps(res, allow_nan=False)


def test_one_class_slides_say_the_figures_are_undefined():
    sc, lab = _frames({"mean": [0.2, 0.3, 0.4]}, ["g1", "g1", "g1"])
    res = slide_level_metrics(sc, lab, GRADES, ordinal=True, val_scores=sc, val_labels=lab, n_boot=50)
    m = res["aggregations"]["mean"]
    assert m["quadratic_kappa"] is None and m["rule_from"].startswith("default")  # no cuts from one class
    assert res["best"] is None and any("undefined" in n for n in res["notes"])
    json.dumps(res, allow_nan=False)
