"""Slide-level results end to end: evaluate_slides writes CSVs and thumbnails, report.html shows them."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from histoflow.core.io import atomic_write_json
from histoflow.evaluate.report import render_report
from histoflow.evaluate.slide_results import evaluate_slides

BINARY = ["normal", "tumor"]
GRADES = ["g1", "g2", "g3"]


def _tiles(split: str, labels: list[int], k: int, rng, coords: bool = True) -> pd.DataFrame:
    """3 x 3 tiles per slide; class-c slides have tiles near class c, slide 1 of each split is misread."""
    rows = []
    for s, c in enumerate(labels):
        centre = (c if s != 1 else (c + 1) % k) / (k - 1)
        for t in range(9):
            p_high = float(np.clip(centre + rng.normal(0, 0.05), 0, 1))
            probs = [1 - p_high, p_high] if k == 2 else [max(0.0, 1 - 2 * p_high), 1 - abs(2 * p_high - 1), 0.0]
            if k == 3:
                probs[2] = 1 - probs[0] - probs[1]
            row = {"slide": f"{split}{s}", **{f"p_{n}": v for n, v in zip(BINARY if k == 2 else GRADES, probs)}}
            if coords:
                row.update(x=(t % 3) * 256, y=(t // 3) * 256, size_px0=256)
            rows.append(row)
    return pd.DataFrame(rows)


def _run_folder(path, slides: dict | None, extra: dict | None = None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"name": "study", "data": {"path": "tiles/"}}))
    metrics = {"val": {"n": 4, "auc": 0.9, "accuracy": 0.8, "threshold": 0.5}, **(extra or {})}
    if slides is not None:
        metrics["slides"] = slides
    atomic_write_json(path / "metrics.json", metrics)
    return path


def _text(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


@pytest.fixture
def binary_study(tmp_path):
    rng = np.random.default_rng(0)
    tiles = {"val": _tiles("val", [0, 1] * 4, 2, rng), "test": _tiles("test", [0, 1] * 3, 2, rng)}
    slides = [s for t in tiles.values() for s in t["slide"].unique()]
    labels = pd.DataFrame({"slide": slides, "label": [BINARY[i % 2] for i in range(len(slides))]})
    labels["patient"] = [f"p{i // 2}" for i in range(len(slides))]
    mil = pd.DataFrame({"slide": tiles["test"]["slide"].unique(), "attention_mil": [0.1, 0.9, 0.2, 0.8, 0.3, 0.7]})
    run = tmp_path / "run"
    res = evaluate_slides(
        tiles, labels, BINARY, extra_scores={"test": mil}, n_boot=100, out_dir=run, tiling_dir=tmp_path / "none"
    )
    return run, res


def test_evaluate_slides_writes_tables_and_thumbnails(binary_study):
    run, res = binary_study
    assert list(res) == ["val", "test"]
    test = res["test"]
    assert test["missing"]["n"] == 0  # the val slides are not "missing" from test
    assert test["aggregations"]["max"]["rule_from"] == "validation"
    assert "attention_mil" in test["aggregations"] and "attention_mil" not in res["val"]["aggregations"]
    assert test["aggregations"]["attention_mil"]["rule_from"].startswith("default")  # not on val
    table = pd.read_csv(run / "slides_test.csv")
    assert len(table) == 6 and {"slide", "patient", "label", "predicted", "correct", "thumbnail"} <= set(table)
    assert not table.set_index("slide").loc["test1", "correct"]  # the misread slide
    for rel in table["thumbnail"]:
        assert rel.startswith("report/slides/test/") and (run / rel).is_file()
    json.dumps(res, allow_nan=False)


def test_report_shows_the_slides_section(binary_study, tmp_path):
    run, res = binary_study
    html = render_report(_run_folder(run, res)).read_text()
    text = _text(html)
    for piece in ("Slides", "Slide level: val", "Slide level: test", "(best)", "Best aggregation", "attention_mil"):
        assert piece in text, piece
    assert "resamples of whole patients" in text and "Youden" in text
    test_part = text[text.index("Slide level: test") :]
    assert test_part.index("test1") < test_part.index("test0")  # misclassified slides first
    thumbs = html[html.index("Slide level: test") :].count('class="thumb"')
    assert thumbs == 6


def test_report_without_slide_results_still_renders(tmp_path):
    html = _text(render_report(_run_folder(tmp_path / "plain", None)).read_text())
    assert "Evaluation: val split" in html and "Slide level" not in html and "<h2>Slides</h2>" not in html


def test_ordinal_study_reports_kappa_with_the_tupac16_anchor(tmp_path):
    rng = np.random.default_rng(1)
    tiles = {"val": _tiles("val", [0, 1, 2] * 3, 3, rng), "test": _tiles("test", [0, 1, 2] * 2, 3, rng, coords=False)}
    slides = [s for t in tiles.values() for s in t["slide"].unique()]
    labels = pd.DataFrame(
        {"slide": slides, "label": [GRADES[i % 3] for i in range(9)] + [GRADES[i % 3] for i in range(6)]}
    )
    labels["split"] = ["val"] * 9 + ["test"] * 6
    labels = pd.concat([labels, pd.DataFrame({"slide": ["lost"], "label": ["g2"], "split": ["test"]})])
    run = tmp_path / "run"
    res = evaluate_slides(tiles, labels, GRADES, ordinal=True, n_boot=100, out_dir=run)
    test = res["test"]
    assert test["task"] == "ordinal" and test["missing"] == {"n": 1, "slides": ["lost"]}
    assert res["val"]["missing"]["n"] == 0
    assert test["aggregations"]["mean"]["rule_from"] == "validation"
    assert any("no heatmap thumbnails" in n for n in test["notes"])  # no coordinates in test tiles
    text = _text(render_report(_run_folder(run, res)).read_text())
    for piece in ("quadratic weighted kappa", "Spearman", "cut points", "0.567", "TUPAC16", "confusion of", "lost"):
        assert piece in text, piece
