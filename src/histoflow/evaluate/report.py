"""report.html of a run, or a comparison of several, rendered from what the run folders hold.

Rendering computes nothing: it reads config.yaml, splits.csv, history.csv, metrics.json,
report/*.png and explain/, and writes one self-contained HTML file. The pieces a run may lack
(the Grad-CAM gallery, the training curves) are made beforehand by `evaluate.gallery.prepare_report`;
`histoflow report` and `workflows.run` call both.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from histoflow.core.io import atomic_write_text
from histoflow.evaluate.compare import compare_section
from histoflow.evaluate.html import esc, fmt, img_tag, notes_html, page, table
from histoflow.evaluate.run_folder import Run, load_runs
from histoflow.evaluate.slide_report import slides_section

log = logging.getLogger(__name__)


def _ci_at(result: dict, name: str) -> dict:
    return ((result.get("ci") or {}).get("thresholds") or {}).get(name, {})


def metrics_section(result: dict) -> str:
    ci = result.get("ci") or {}
    thr_name = f"threshold {result.get('threshold'):g}" if result.get("threshold") is not None else None
    at = _ci_at(result, thr_name) if thr_name else {}
    rows: list[list[Any]] = [
        ["n (patches)", result.get("n")],
        ["ROC AUC", fmt(result.get("auc"), ci.get("auc"))],
        ["PR AUC (average precision)", fmt(result.get("pr_auc"))],
        ["accuracy", fmt(result.get("accuracy"))],
        ["balanced accuracy", fmt(result.get("balanced_accuracy"))],
        ["sensitivity (recall)", fmt(result.get("recall"), at.get("sensitivity"))],
        ["specificity", fmt(result.get("specificity"), at.get("specificity"))],
        ["F1", fmt(result.get("f1"))],
        ["expected calibration error", fmt((result.get("calibration") or {}).get("ece"))],
    ]
    if result.get("threshold") is not None:
        rows.insert(1, ["decision threshold", fmt(result["threshold"])])
    if result.get("positive_class") is not None:  # runs evaluated before it was recorded lack it
        rows.insert(1, ["positive class", result["positive_class"]])
    if result.get("temperature"):
        rows.append(["temperature applied", fmt(result["temperature"])])
    text = table(["metric", "value (95% CI)"], rows)
    if ci.get("n_boot"):
        grouped = (
            f", resampling whole {ci['grouped_by']}s ({ci.get('n_groups')})"
            if ci.get("grouped_by")
            else ", resampling patches (no patient/slide column)"
        )
        text += (
            f"<p>95% confidence intervals: percentile bootstrap, {ci['n_boot']} resamples{grouped}, "
            f"seed {ci.get('seed')}; thresholds fixed.</p>"
        )
    return text + notes_html(result.get("notes", []) + ci.get("notes", []))


def headline(result: dict) -> str:
    """The SLN-style sentence: sensitivity 1.0 and the share of negatives spared."""
    points = (result.get("operating_points") or {}).get("points", [])
    top = next((p for p in points if p.get("target_sensitivity") == 1.0), None)
    if not top or top.get("specificity") is None:
        return ""
    return (
        f'<p class="headline">At threshold {top["threshold"]:.4f}: sensitivity {top["sensitivity"]:.0%} '
        f"while {top['negatives_spared']:.0%} of negative cases are identified as such "
        f"({top['tn']} of {top['tn'] + top['fp']}).</p>"
    )


def operating_section(result: dict) -> str:
    ops = result.get("operating_points") or {}
    rows = []
    for p in ops.get("points", []):
        c = _ci_at(result, p["name"])
        rows.append(
            [
                p["name"],
                fmt(p["threshold"], digits=4),
                fmt(p["sensitivity"], c.get("sensitivity")),
                fmt(p["specificity"], c.get("specificity")),
                fmt(p["ppv"]),
                fmt(p["npv"]),
                fmt(p["negatives_spared"]),
                fmt(p["workload_spared"]),
                f"{p['tp']}/{p['fp']}/{p['fn']}/{p['tn']}",
            ]
        )
    out = headline(result)
    if ops.get("positive_class") is not None:
        out += (
            f"<p>positive class: <b>{esc(ops['positive_class'])}</b> (sensitivity, PPV and thresholds are about it)</p>"
        )
    if rows:
        out += table(
            [
                "operating point",
                "threshold",
                "sensitivity (95% CI)",
                "specificity (95% CI)",
                "PPV",
                "NPV",
                "negatives spared",
                "workload spared",
                "TP/FP/FN/TN",
            ],
            rows,
        )
        out += (
            "<p>negatives spared: share of truly negative cases called negative; workload spared: share of "
            "all cases called negative (not needing first review). Thresholds are chosen on this same data, "
            "so they are optimistic for new data.</p>"
        )
    return out + notes_html(ops.get("notes", []))


def aggregate_section(result: dict) -> str:
    out = ""
    for level, agg in (result.get("aggregate") or {}).items():
        out += f"<h4>{esc(level)}-level ({agg.get('n', 0)} {esc(level)}s)</h4>"
        out += f"<p>{esc(agg.get('label_rule', ''))}; score: {esc(agg.get('score', ''))}.</p>"
        out += table(
            ["metric", "value"],
            [
                ["ROC AUC", fmt(agg.get("auc"))],
                ["accuracy", fmt(agg.get("accuracy"))],
                ["sensitivity", fmt(agg.get("recall"))],
                ["specificity", fmt(agg.get("specificity"))],
            ],
        )
        out += notes_html(agg.get("notes", []))
        groups = agg.get("groups", [])
        rows = [
            [
                g["group"],
                g["n_patches"],
                g["n_positive"],
                g["label"],
                fmt(g["score"]),
                fmt(g["mean_p"]),
                fmt(g["patch_accuracy"]),
            ]
            for g in groups[:100]
        ]
        out += table([level, "patches", "positive patches", "label", "score", "mean p", "patch accuracy"], rows)
        if len(groups) > 100:
            out += f"<p>... {len(groups) - 100} more in metrics.json</p>"
    return out


def data_section(run: Run) -> str:
    if run.splits is None:
        return '<div class="missing">splits.csv missing: no data summary</div>'
    s = run.splits
    counts = pd.crosstab(s["split"], s["label"].astype(str))
    header = ["split", *map(str, counts.columns), "total"]
    extra = [c for c in ("patient", "slide") if c in s and (s[c].astype(str) != "").any()]
    header += [f"{c}s" for c in extra]
    rows = []
    for split, row in counts.iterrows():
        part = s[s["split"] == split]
        rows.append([split, *row.tolist(), int(row.sum()), *[part[c].nunique() for c in extra]])
    d = run.config.get("data", {})
    return (
        f"<p>data: <code>{esc(d.get('path'))}</code> (format {esc(d.get('format'))}), image_px "
        f"{esc(d.get('image_px'))}, max_per_split {esc(d.get('max_per_split'))}</p>"
        + table(header, rows)
        + skipped_section(run.metrics.get("skipped"))
    )


def skipped_section(skipped: dict | None) -> str:
    """The images `data.on_error: skip` left out of the run (none: nothing shown)."""
    if not skipped or not skipped.get("count"):
        return ""
    n, files = skipped["count"], skipped.get("files", [])
    more = f"; the first {len(files)} are listed" if len(files) < n else ""
    return (
        f'<div class="missing">{n} image(s) could not be read and were skipped (data.on_error: skip){more}.</div>'
        + table(["file", "why"], [[f["path"], f["reason"]] for f in files], left=2)
    )


def training_section(run: Run) -> str:
    out = img_tag(run.path / "report" / "training_curves.png", "training curves", "wide")
    if run.history is not None and len(run.history):
        last = run.history.iloc[-1]
        out += (
            "<p>last epoch: "
            + ", ".join(f"{esc(k)} {v:.4g}" if isinstance(v, float) else f"{esc(k)} {esc(v)}" for k, v in last.items())
            + "</p>"
        )
    return out


def environment_section(run: Run) -> str:
    env = run.metrics.get("environment") or {}
    rows = [
        ["seed", run.config.get("seed")],
        ["training wall time (s)", run.metrics.get("train_seconds", "unknown")],
        ["best epoch", run.metrics.get("epoch")],
        ["device (evaluation)", env.get("device", "unknown")],
        ["platform", env.get("platform", "unknown")],
    ]
    rows += [[k, v] for k, v in (env.get("versions") or {}).items()]
    return table(["item", "value"], rows, left=2)


def run_section(run: Run, level: int = 2) -> str:
    h = f"h{level}"
    parts = [f"<{h}>Data and splits</{h}>", data_section(run), f"<{h}>Training</{h}>", training_section(run)]
    for name, result in run.split_results.items():
        parts.append(f"<{h}>Evaluation: {esc(name)} split</{h}>")
        parts.append(metrics_section(result))
        figs = [
            img_tag(run.path / "report" / f"{kind}_{name}.png", f"{label}, {name}")
            for kind, label in (
                ("roc", "ROC curve"),
                ("pr", "precision-recall curve"),
                ("confusion", "confusion matrix"),
                ("calibration", "reliability diagram"),
            )
        ]
        parts.append('<div class="figs">' + "".join(figs) + "</div>")
        parts.append(f"<h3>Operating points ({esc(name)})</h3>" + operating_section(result))
        if result.get("aggregate"):
            parts.append(f"<h3>Patient / slide level ({esc(name)})</h3>" + aggregate_section(result))
    if isinstance(run.metrics.get("slides"), dict) and run.metrics["slides"]:
        parts.append(f"<{h}>Slides</{h}>" + slides_section(run.metrics["slides"], run.path, level + 1))
    cal = run.path / "calibration.json"
    if cal.is_file():
        c = json.loads(cal.read_text())
        parts.append(f"<{h}>Temperature scaling</{h}>" + table(["item", "value"], [[k, v] for k, v in c.items()], 2))
    parts.append(f"<{h}>Grad-CAM gallery</{h}>")
    gallery = run.path / "explain" / "gallery.png"
    parts.append(img_tag(gallery if gallery.is_file() else None, "Grad-CAM gallery", "wide"))
    csv = run.path / "explain" / "gallery.csv"
    if csv.is_file():
        g = pd.read_csv(csv)
        parts.append(
            table(
                ["category", "file", "label", "predicted", "probability"],
                [[r.category, Path(r.path).name, r.label, r.predicted, f"{r.probability:.4f}"] for r in g.itertuples()],
                left=4,
            )
        )
    parts.append(f"<{h}>Environment</{h}>" + environment_section(run))
    parts.append(f"<{h}>Resolved config</{h}><pre>{esc(run.config_text)}</pre>")
    problems = [f"missing: {m}" for m in run.missing] + run.notes
    return (f'<div class="missing">{"<br>".join(esc(p) for p in problems)}</div>' if problems else "") + "".join(parts)


def render_report(runs, out: str | Path | None = None) -> Path:
    """report.html of one run (default RUN_DIR/report.html) or a comparison of several, from what
    the run folders hold: `runs` are `Run`s (from `prepare_report`, which makes missing pieces,
    or `load_runs`) or run folders."""
    if isinstance(runs, Run):
        runs = [runs]
    elif isinstance(runs, (str, Path)) or not runs or not all(isinstance(r, Run) for r in runs):
        runs = load_runs(runs)
    if len(runs) == 1:
        run = runs[0]
        out = Path(out) if out else run.path / "report.html"
        body = run_section(run)
        title = f"histoflow report: {run.name}"
    else:
        names = [r.name for r in runs]
        if len(set(names)) < len(names):  # same config name: tell runs apart by folder
            for r in runs:
                r.name = r.path.name
        out = Path(out) if out else runs[0].path.parent / f"compare_{'_vs_'.join(r.name for r in runs)}.html"
        body = compare_section(runs, out.parent)
        body += "".join(
            f"<hr><h2>Run: {esc(r.name)} <small>({esc(r.path)})</small></h2>{run_section(r, 3)}" for r in runs
        )
        title = "histoflow comparison: " + " vs ".join(r.name for r in runs)
    atomic_write_text(out, page(title, body))
    log.info("wrote %s", out)
    return out
