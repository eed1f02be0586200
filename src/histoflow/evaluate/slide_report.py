"""The "Slides" section of report.html, rendered from metrics.json["slides"] (nothing computed).

metrics.json["slides"] maps a split name to a slide_level_metrics result (see
evaluate.slide_results.evaluate_slides). Per split: what was compared and how, a table of
aggregation x metric with 95% CIs and the best aggregation marked, the confusion of the best
(ordinal), the slides left out, and the per-slide table with its heatmap thumbnails. The
misclassified slides come first in that table: they are what a reviewer opens the report for.
"""

from __future__ import annotations

from pathlib import Path

from histoflow.evaluate.html import Raw, esc, fmt, img_tag, notes_html, table

MAX_ROWS = 300  # per-slide rows shown; slides_<split>.csv holds all

COLUMNS = {
    "binary": [
        ("auc", "ROC AUC"),
        ("accuracy", "accuracy"),
        ("sensitivity", "sensitivity"),
        ("specificity", "specificity"),
    ],
    "ordinal": [
        ("quadratic_kappa", "quadratic weighted kappa"),
        ("accuracy", "accuracy"),
        ("spearman", "Spearman rho"),
    ],
}


def _rule(task: str, agg: dict) -> str:
    if task == "binary":
        return fmt(agg.get("threshold"), digits=4)
    return ", ".join(f"{c:.3f}" for c in agg.get("cut_points") or [])


def aggregation_table(result: dict) -> str:
    task = result["task"]
    best = (result.get("best") or {}).get("aggregation")
    headline = COLUMNS[task][0][0]
    header = ["aggregation", "slides", *[f"{label} (95% CI)" for _, label in COLUMNS[task]]]
    aggs = result.get("aggregations") or {}
    with_val = any(a.get(f"validation_{headline}") is not None for a in aggs.values())
    header += ["threshold" if task == "binary" else "cut points", "rule from"]
    header += [f"validation {COLUMNS[task][0][1]}"] if with_val else []
    rows = []
    for name, agg in aggs.items():
        label = Raw(f"<b>{esc(name)}</b> (best)") if name == best else name
        rows.append(
            [
                label,
                agg.get("n"),
                *[fmt(agg.get(key), agg.get(f"{key}_ci")) for key, _ in COLUMNS[task]],
                _rule(task, agg),
                agg.get("rule_from", ""),
                *([fmt(agg.get(f"validation_{headline}"))] if with_val else []),
            ]
        )
    return table(header, rows)


def _summary(result: dict) -> str:
    n = result.get("n_slides", 0)
    if result["task"] == "binary":
        counts = f"{n} slides, {result.get('n_positive', 0)} positive ({esc(result.get('positive_class'))})"
    else:
        counts = f"{n} slides: " + ", ".join(f"{esc(k)} {v}" for k, v in (result.get("class_counts") or {}).items())
    boot = result.get("bootstrap") or {}
    text = f"<p>{counts}. "
    if boot:
        text += (
            f"95% CIs: percentile bootstrap, {boot.get('n_boot')} resamples of whole {esc(boot.get('resampled'))}s "
            f"({boot.get('n_units')}), seed {boot.get('seed')}; rules fixed. "
        )
    text += f"{esc(result.get('decision_rule', ''))}.</p>"
    best = result.get("best")
    if best:
        text += (
            f'<p class="headline">Best aggregation: <b>{esc(best["aggregation"])}</b>, '
            f"by {esc(best['by'])} ({fmt(best.get('value'))}).</p>"
        )
    return text


def _left_out(result: dict) -> str:
    out = ""
    for key, what in (("unlabelled", "scored slides without a label"), ("missing", "labelled slides without scores")):
        part = result.get(key) or {}
        if part.get("n"):
            listed = ", ".join(part.get("slides") or [])
            more = f" (first {len(part['slides'])})" if len(part.get("slides") or []) < part["n"] else ""
            out += f'<div class="missing">{part["n"]} {what}, left out{more}: {esc(listed)}</div>'
    return out


def _confusion(result: dict) -> str:
    best = (result.get("best") or {}).get("aggregation")
    cm = ((result.get("aggregations") or {}).get(best) or {}).get("confusion_matrix")
    if result["task"] != "ordinal" or not cm:
        return ""
    names = result["class_names"]
    return f"<p>confusion of {esc(best)} (rows: label, columns: predicted)</p>" + table(
        ["label \\ predicted", *names], [[n, *row] for n, row in zip(names, cm)]
    )


def slide_table_html(result: dict, base: Path) -> str:
    """The per-slide table, misclassified first; thumbnails embedded from `base`/<thumbnail>."""
    rows = result.get("slides") or []
    if not rows:
        return ""
    scores = list(result.get("aggregations") or {})
    best = (result.get("best") or {}).get("aggregation")
    has_patient = any(r.get("patient") not in (None, "") for r in rows)
    has_thumb = any(r.get("thumbnail") for r in rows)
    header = ["slide", *(["patient"] if has_patient else []), "label", "predicted", "correct", "tiles"]
    header += [f"{s} (best)" if s == best else s for s in scores]
    header += ["heatmap"] if has_thumb else []
    ordered = sorted(rows, key=lambda r: r.get("correct") is not False)
    body = []
    for r in ordered[:MAX_ROWS]:
        row = [r["slide"], *([r.get("patient")] if has_patient else []), r["label"], r.get("predicted")]
        row += [{True: "yes", False: "NO"}.get(r.get("correct"), "-"), r.get("n_tiles")]
        row += [fmt(r.get(s)) for s in scores]
        if has_thumb:
            thumb = r.get("thumbnail")
            row.append(Raw(img_tag(base / thumb, f"heatmap of {r['slide']}", "thumb")) if thumb else "-")
        body.append(row)
    more = f"<p>... {len(rows) - MAX_ROWS} more slides in the per-slide CSV</p>" if len(rows) > MAX_ROWS else ""
    return table(header, body, left=4 + has_patient) + more


def slides_section(slides: dict, base: Path, level: int = 3) -> str:
    """Every split's slide-level results (`slides`: metrics.json["slides"]); `base`: the run
    folder the thumbnails' relative paths start from."""
    h = f"h{level}"
    out = (
        "<p>Slide scores aggregate the tile predictions of each slide (max, mean, mean of the top k tiles, "
        "fraction of tiles called positive; a learned attention-MIL score when given). Scale: P(positive class) "
        "for two classes; for ordered classes the expected class index, 0 = first class.</p>"
    )
    for split, result in slides.items():
        if not isinstance(result, dict) or "task" not in result:
            continue
        out += f"<{h}>Slide level: {esc(split)}</{h}>" + _summary(result)
        if result.get("aggregations"):
            out += aggregation_table(result) + _confusion(result)
        if result.get("reference"):
            out += f'<div class="note">{esc(result["reference"])}</div>'
        out += _left_out(result) + notes_html(result.get("notes", []))
        out += slide_table_html(result, base)
    return out
