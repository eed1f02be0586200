"""Slide scores from tile predictions: every aggregation checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoflow.core.errors import DataError
from histoflow.evaluate.slide_scores import labels_from_tiles, slide_scores


def _binary_tiles(prefix: str = "p_") -> pd.DataFrame:
    p = [0.1, 0.4, 0.7, 0.9, 0.2]
    return pd.DataFrame(
        {"slide": ["A", "A", "A", "A", "B"], f"{prefix}normal": [1 - v for v in p], f"{prefix}tumor": p}
    )


def test_binary_aggregations_by_hand():
    s = slide_scores(_binary_tiles(), ["normal", "tumor"], top_k=2, threshold=0.5).set_index("slide")
    assert list(s.columns) == ["n_tiles", "max", "mean", "topk_mean", "fraction"]
    a, b = s.loc["A"], s.loc["B"]
    assert a["n_tiles"] == 4 and b["n_tiles"] == 1
    assert a["max"] == pytest.approx(0.9)
    assert a["mean"] == pytest.approx((0.1 + 0.4 + 0.7 + 0.9) / 4)
    assert a["topk_mean"] == pytest.approx((0.7 + 0.9) / 2)  # the 2 highest tiles
    assert a["fraction"] == pytest.approx(0.5)  # 0.7 and 0.9 reach 0.5
    # one tile: top-k takes what there is; nothing reaches the threshold
    assert b["topk_mean"] == pytest.approx(0.2) and b["fraction"] == 0.0


def test_predict_slide_columns_and_chosen_aggregations():
    """predict-slide's tiles.parquet names probabilities prob_<class>."""
    s = slide_scores(_binary_tiles("prob_"), ["normal", "tumor"], aggregations=("max",), threshold=0.5)
    assert list(s.columns) == ["slide", "n_tiles", "max"]
    assert s["max"].tolist() == pytest.approx([0.9, 0.2])


def test_ordinal_score_is_the_expected_class_index():
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]])
    tiles = pd.DataFrame(probs, columns=["p_g1", "p_g2", "p_g3"]).assign(slide="S")
    s = slide_scores(tiles, ["g1", "g2", "g3"], top_k=2, threshold=0.5).iloc[0]
    values = [0.0, 2.0, 0.3 + 2 * 0.5]  # sum_k k * p_k
    assert s["max"] == pytest.approx(2.0)
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["topk_mean"] == pytest.approx((2.0 + 1.3) / 2)
    # P(class >= 1) = 0, 1, 0.8 -> 2 of 3 tiles; P(class >= 2) = 0, 1, 0.5 -> 2 of 3 (0.5 reaches 0.5)
    assert s["fraction"] == pytest.approx(2 / 3 + 2 / 3)


def test_ordinal_fraction_with_two_classes_is_the_binary_fraction():
    tiles = _binary_tiles()
    two = slide_scores(tiles, ["normal", "tumor"], aggregations=("fraction",), threshold=0.6)
    assert two["fraction"].tolist() == pytest.approx([0.5, 0.0])  # 0.7, 0.9 of A


def test_missing_probabilities_are_ignored_and_an_empty_slide_has_no_score():
    tiles = pd.DataFrame({"slide": ["A", "A", "B"], "p_n": [0.5, np.nan, np.nan], "p_t": [0.5, np.nan, np.nan]})
    s = slide_scores(tiles, ["n", "t"]).set_index("slide")
    assert s.loc["A", "n_tiles"] == 1 and s.loc["A", "max"] == pytest.approx(0.5)
    assert s.loc["B", "n_tiles"] == 0 and np.isnan(s.loc["B", "mean"])  # not a confident 0


def test_bad_inputs_name_what_is_wrong():
    with pytest.raises(DataError, match="p_tumor"):
        slide_scores(_binary_tiles().drop(columns="p_tumor"), ["normal", "tumor"])
    with pytest.raises(DataError, match="median"):
        slide_scores(_binary_tiles(), ["normal", "tumor"], aggregations=("median",))
    with pytest.raises(DataError, match="'slide'"):
        slide_scores(_binary_tiles().drop(columns="slide"), ["normal", "tumor"])


def test_labels_from_tiles_take_the_highest_class_and_keep_the_patient():
    tiles = pd.DataFrame({"slide": ["A", "A", "B"], "label": [0, 1, 0], "patient": ["p1", "p1", "p2"]})
    labels, notes = labels_from_tiles(tiles, ["normal", "tumor"])
    assert labels.to_dict(orient="records") == [
        {"slide": "A", "label": "tumor", "patient": "p1"},
        {"slide": "B", "label": "normal", "patient": "p2"},
    ]
    assert "1 slide(s)" in notes[0]
    text = tiles.assign(label=["normal", "normal", "tumor"])
    assert labels_from_tiles(text, ["normal", "tumor"])[0]["label"].tolist() == ["normal", "tumor"]
    with pytest.raises(DataError, match="outside"):
        labels_from_tiles(tiles.assign(label=[0, 2, 0]), ["normal", "tumor"])
