"""Detection metrics on hand-made cases whose right answers are worked out in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from histoflow.core.errors import ConfigError, DataError
from histoflow.evaluate.detection import (
    ImageDetections,
    average_precision,
    choose_threshold,
    counts_at,
    detection_metrics,
    match_points,
)


def test_one_to_one_within_the_radius():
    gt = [[0, 0], [100, 100]]
    det = [[3, 4], [0, 1], [100, 131]]  # two near the first point (5 px and 1 px), one 31 px from the second
    pairs = match_points(gt, det, radius=30)
    assert pairs.tolist() == [[0, 1]]  # one detection per point: the closer one; 31 px is beyond 30
    assert match_points(gt, det, radius=31).tolist() == [[0, 1], [1, 2]]  # a distance equal to the radius counts


def test_hungarian_finds_the_pairing_greedy_loses():
    # points at x=0 and x=25, radius 15. Detection A (score 0.9) at x=11 is 11 px from the first
    # point and 14 px from the second; B (score 0.5) at x=-12 reaches only the first point.
    # Greedy gives A its nearest point (the first), so B finds nothing: 1 TP, 1 FP, 1 FN.
    # The optimal pairing is A-second, B-first: 2 TP.
    gt, det, scores = [[0, 0], [25, 0]], [[11, 0], [-12, 0]], [0.9, 0.5]
    assert len(match_points(gt, det, 15, "greedy", scores)) == 1
    assert sorted(match_points(gt, det, 15, "hungarian").tolist()) == [[0, 1], [1, 0]]
    item = ImageDetections("a", gt, det, scores, radius_px=15)
    assert counts_at([item], 0.0)["f1"] == 1.0
    greedy = counts_at([item], 0.0, "greedy")
    assert (greedy["tp"], greedy["fp"], greedy["fn"]) == (1, 1, 1)


def test_counts_are_pooled_over_images_and_threshold_filters():
    a = ImageDetections("a", [[10, 10], [50, 50]], [[12, 10], [80, 80]], [0.9, 0.8], radius_px=7.5)
    b = ImageDetections("b", np.zeros((0, 2)), [[5, 5]], [0.3], radius_px=7.5)  # no points: any detection is FP
    c = ImageDetections("c", [[5, 5]], np.zeros((0, 2)), [], radius_px=7.5)  # nothing found: FN
    all_kept = counts_at([a, b, c], 0.0)
    assert (all_kept["tp"], all_kept["fp"], all_kept["fn"]) == (1, 2, 2)
    assert all_kept["precision"] == pytest.approx(1 / 3) and all_kept["recall"] == pytest.approx(1 / 3)
    assert all_kept["f1"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 2))
    strict = counts_at([a, b, c], 0.85)  # only a's 0.9 detection survives
    assert (strict["tp"], strict["fp"], strict["fn"]) == (1, 0, 2) and strict["precision"] == 1.0


def test_ignore_points_drop_detections_instead_of_counting_them():
    item = ImageDetections(
        "a", [[10, 10]], [[10, 11], [100, 100], [200, 200]], [0.9, 0.8, 0.7], 10, ignore=[[102, 100]]
    )
    result = counts_at([item], 0.0)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 0)  # (100,100) ignored, (200,200) a real FP


def test_average_precision_on_a_ranked_list():
    # 3 points. Ranked detections: TP (0.9), FP (0.8), TP (0.7), FP (0.6); one point never found.
    # precision after each: 1, 1/2, 2/3, 1/2; recall: 1/3, 1/3, 2/3, 2/3.
    # envelope: 1, 2/3, 2/3, 1/2 -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9.
    item = ImageDetections(
        "a", [[0, 0], [100, 0], [200, 0]], [[0, 1], [50, 50], [100, 2], [300, 300]], [0.9, 0.8, 0.7, 0.6], 10
    )
    assert average_precision([item]) == pytest.approx(5 / 9)
    perfect = ImageDetections("b", [[0, 0]], [[0, 0], [60, 60]], [0.9, 0.1], 10)
    assert average_precision([perfect]) == pytest.approx(1.0)  # the FP ranks below every TP
    flipped = ImageDetections("c", [[0, 0]], [[0, 0], [60, 60]], [0.1, 0.9], 10)
    assert average_precision([flipped]) == pytest.approx(0.5)
    assert average_precision([ImageDetections("d", np.zeros((0, 2)), [[1, 1]], [0.5], 10)]) is None
    assert average_precision([ImageDetections("e", [[1, 1]], np.zeros((0, 2)), [], 10)]) == 0.0


def test_threshold_is_chosen_for_best_f1_and_applied_elsewhere():
    # validation: true detections score 0.6-0.9, false ones 0.2-0.4: any threshold in (0.4, 0.6] is perfect
    val = [
        ImageDetections(f"v{i}", [[10, 10]], [[10, 10], [60, 60]], [0.6 + 0.1 * i, 0.2 + 0.1 * i], 7.5)
        for i in range(3)
    ]
    chosen = choose_threshold(val)
    assert chosen["f1"] == 1.0 and 0.4 < chosen["threshold"] <= 0.6
    test = [ImageDetections("t", [[10, 10]], [[10, 10], [60, 60]], [0.55, 0.5], 7.5)]
    # at the chosen threshold (0.6) nothing is kept on this test image: recall 0, F1 0
    metrics = detection_metrics(test, chosen["threshold"])
    assert metrics["tp"] == 0 and metrics["fn"] == 1 and metrics["f1"] == 0.0 and metrics["ap"] == 1.0


def test_bad_input():
    with pytest.raises(DataError, match="2 detections but 1 scores"):
        ImageDetections("a", [[0, 0]], [[0, 0], [1, 1]], [0.5], 7.5)
    with pytest.raises(ConfigError, match="radius"):
        ImageDetections("a", [[0, 0]], [[0, 0]], [0.5], 0)
    with pytest.raises(ConfigError, match="hungarian"):
        match_points([[0, 0]], [[0, 0]], 5, method="nearest")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="cannot choose"):
        choose_threshold([ImageDetections("a", np.zeros((0, 2)), np.zeros((0, 2)), [], 5)], thresholds=[0.5])


def test_bootstrap_resamples_groups_and_brackets_the_estimate():
    from histoflow.evaluate.detection import bootstrap_detection

    rng = np.random.default_rng(1)
    items = []
    for i in range(30):  # 30 images on 10 slides; about 2 in 3 found, a few false positives
        found = rng.random() < 0.67
        det = [[10, 10]] if found else [[80, 80]]
        items.append(ImageDetections(f"i{i}", [[10, 10]], det, [0.9], 7.5))
    ci = bootstrap_detection(items, np.repeat(np.arange(10), 3), threshold=0.5, n_boot=300, seed=0)
    point = detection_metrics(items, 0.5)
    assert ci["groups"] == 10
    for name in ("precision", "recall", "f1", "ap"):
        low, high = ci[name]
        assert low <= point[name] <= high and low < high
    with pytest.raises(DataError, match="group labels"):
        bootstrap_detection(items, [0, 1], 0.5)
