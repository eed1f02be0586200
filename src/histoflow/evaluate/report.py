"""`histoflow report RUN_DIR [RUN_DIR ...]`: one self-contained report.html per run, or a comparison.

Self-contained means a pathologist can mail the file and open it offline: every image is
embedded as base64, the CSS is inline, nothing is fetched from the network. The report reads
only what a run folder holds (config.yaml, splits.csv, history.csv, metrics.json, report/*.png,
explain/) and, when the Grad-CAM gallery is missing, makes it from the best checkpoint.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from histoflow.core.errors import DataError, HistoflowError

log = logging.getLogger(__name__)
REQUIRED = ("config.yaml", "metrics.json")
SPLIT_KEYS = ("val", "test", "val_tta", "test_tta", "data")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1150px;color:#1d2330;background:#fff}
h1{font-size:1.6em;border-bottom:3px solid #7a2f63;padding-bottom:6px}h2{color:#7a2f63;margin-top:1.8em}
h3{margin-bottom:.3em}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #c9cdd6;padding:4px 8px;text-align:right}th{background:#eef0f5}td.l,th.l{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.figs img{max-width:360px;border:1px solid #ddd}
img.wide{max-width:100%;border:1px solid #ddd}.note{background:#fff4d6;border-left:4px solid #e0a800;padding:4px 10px;margin:4px 0}
.missing{background:#fde8e8;border-left:4px solid #c0392b;padding:4px 10px;margin:4px 0}
pre{background:#f6f7f9;padding:10px;font-size:.8em;max-height:420px;overflow:auto}
.headline{font-size:1.1em;background:#eef7ee;border-left:4px solid #2e8b57;padding:6px 12px}
"""


@dataclass
class Run:
    """What a run folder holds, read once; `missing` lists optional files that were absent."""

    path: Path
    name: str
    config: dict
    config_text: str
    metrics: dict
    splits: pd.DataFrame | None = None
    history: pd.DataFrame | None = None
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def split_results(self) -> dict[str, dict]:
        return {k: self.metrics[k] for k in SPLIT_KEYS if isinstance(self.metrics.get(k), dict)}


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder; a folder without config.yaml or metrics.json is an error that says what to do."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a run folder (no such directory)")
    absent = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if absent:
        hint = (" (the run has a checkpoint: `histoflow evaluate --checkpoint "
                f"{run_dir / 'checkpoints' / 'best.pt'} ...` or re-run training)"
                if (run_dir / "checkpoints" / "best.pt").is_file() else " (did training finish?)")
        raise DataError(f"{run_dir}: run folder is missing {', '.join(absent)}{hint}")
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{run_dir / 'metrics.json'}: not valid JSON ({exc})") from exc
    text = (run_dir / "config.yaml").read_text()
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{run_dir / 'config.yaml'}: not valid YAML ({exc})") from exc
    run = Run(run_dir, config.get("name", run_dir.name), config, text, metrics)
    for attr, name in (("splits", "splits.csv"), ("history", "history.csv")):
        path = run_dir / name
        if path.is_file():
            try:
                setattr(run, attr, pd.read_csv(path, keep_default_na=False))
            except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                run.notes.append(f"{name} unreadable ({exc})")
        else:
            run.missing.append(name)
    if not run.split_results:
        run.notes.append("metrics.json holds no evaluated split (val/test)")
    return run


def ensure_gallery(run: Run, n: int = 32, method: str = "gradcam") -> Path | None:
    """explain/gallery.png of the run, made from checkpoints/best.pt on the val (else test) split."""
    gallery = run.path / "explain" / "gallery.png"
    if gallery.is_file():
        return gallery
    ckpt = run.path / "checkpoints" / "best.pt"
    if not ckpt.is_file() or run.splits is None:
        run.missing.append("explain/gallery.png (and no checkpoint + splits.csv to make it)")
        return None
    split = next((s for s in ("val", "test") if (run.splits["split"] == s).any()), None)
    if split is None:
        run.notes.append("no val/test rows in splits.csv: no Grad-CAM gallery")
        return None
    try:
        explain_run(run.path, ckpt, split, n=n, method=method)
    except (HistoflowError, ImportError) as exc:
        run.notes.append(f"Grad-CAM gallery not made: {exc}")
        return None
    return gallery


def explain_run(run_dir: Path, checkpoint: Path, split: str, n: int = 32, method: str = "gradcam") -> dict:
    from histoflow.checkpoint import load_checkpoint
    from histoflow.data.manifest import read_manifest
    from histoflow.evaluate.gradcam import explain_gallery
    from histoflow.evaluate.run import dataset_for_checkpoint

    model, ckpt = load_checkpoint(checkpoint)
    manifest = read_manifest(run_dir / "splits.csv", format="csv").split(split)
    dataset = dataset_for_checkpoint(manifest, ckpt)
    return explain_gallery(model, ckpt, dataset, run_dir / "explain", n=n, method=method)


# ---------------------------------------------------------------- HTML pieces

def esc(value) -> str:
    return html.escape(str(value))


def img_tag(path: Path | None, alt: str, css: str = "") -> str:
    if path is None or not Path(path).is_file():
        return f'<div class="missing">{esc(alt)}: not available</div>'
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    cls = f' class="{css}"' if css else ""
    return f'<img{cls} alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(header: list[str], rows: list[list], left: int = 1) -> str:
    """An HTML table; the first `left` columns are left-aligned (names), the rest numbers."""
    th = "".join(f'<th class="l">{esc(h)}</th>' if i < left else f"<th>{esc(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="l">{esc(v)}</td>' if i < left else f"<td>{esc(v)}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def fmt(value, ci=None, digits: int = 3) -> str:
    """A number, its CI when known; undefined values say so rather than print NaN."""
    if value is None:
        return "undefined"
    text = f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)
    if ci:
        text += f" ({ci[0]:.{digits}f}-{ci[1]:.{digits}f})"
    return text


def notes_html(notes) -> str:
    return "".join(f'<div class="note">{esc(n)}</div>' for n in notes)


def _ci_at(result: dict, name: str) -> dict:
    return ((result.get("ci") or {}).get("thresholds") or {}).get(name, {})


def metrics_section(result: dict) -> str:
    ci = result.get("ci") or {}
    thr_name = f"threshold {result.get('threshold'):g}" if result.get("threshold") is not None else None
    at = _ci_at(result, thr_name) if thr_name else {}
    rows = [["n (patches)", result.get("n")],
            ["ROC AUC", fmt(result.get("auc"), ci.get("auc"))],
            ["PR AUC (average precision)", fmt(result.get("pr_auc"))],
            ["accuracy", fmt(result.get("accuracy"))],
            ["balanced accuracy", fmt(result.get("balanced_accuracy"))],
            ["sensitivity (recall)", fmt(result.get("recall"), at.get("sensitivity"))],
            ["specificity", fmt(result.get("specificity"), at.get("specificity"))],
            ["F1", fmt(result.get("f1"))],
            ["expected calibration error", fmt((result.get("calibration") or {}).get("ece"))]]
    if result.get("threshold") is not None:
        rows.insert(1, ["decision threshold", fmt(result["threshold"])])
    if result.get("temperature"):
        rows.append(["temperature applied", fmt(result["temperature"])])
    text = table(["metric", "value (95% CI)"], rows)
    if ci.get("n_boot"):
        grouped = f", resampling whole {ci['grouped_by']}s ({ci.get('n_groups')})" if ci.get("grouped_by") else \
            ", resampling patches (no patient/slide column)"
        text += (f"<p>95% confidence intervals: percentile bootstrap, {ci['n_boot']} resamples{grouped}, "
                 f"seed {ci.get('seed')}; thresholds fixed.</p>")
    return text + notes_html(result.get("notes", []) + ci.get("notes", []))


def headline(result: dict) -> str:
    """The SLN-style sentence: sensitivity 1.0 and the share of negatives spared."""
    points = (result.get("operating_points") or {}).get("points", [])
    top = next((p for p in points if p.get("target_sensitivity") == 1.0), None)
    if not top or top.get("specificity") is None:
        return ""
    return (f'<p class="headline">At threshold {top["threshold"]:.4f}: sensitivity {top["sensitivity"]:.0%} '
            f'while {top["negatives_spared"]:.0%} of negative cases are identified as such '
            f'({top["tn"]} of {top["tn"] + top["fp"]}).</p>')


def operating_section(result: dict) -> str:
    ops = result.get("operating_points") or {}
    rows = []
    for p in ops.get("points", []):
        c = _ci_at(result, p["name"])
        rows.append([p["name"], fmt(p["threshold"], digits=4), fmt(p["sensitivity"], c.get("sensitivity")),
                     fmt(p["specificity"], c.get("specificity")), fmt(p["ppv"]), fmt(p["npv"]),
                     fmt(p["negatives_spared"]), fmt(p["workload_spared"]),
                     f'{p["tp"]}/{p["fp"]}/{p["fn"]}/{p["tn"]}'])
    out = headline(result)
    if rows:
        out += table(["operating point", "threshold", "sensitivity (95% CI)", "specificity (95% CI)", "PPV", "NPV",
                      "negatives spared", "workload spared", "TP/FP/FN/TN"], rows)
        out += ("<p>negatives spared: share of truly negative cases called negative; workload spared: share of "
                "all cases called negative (not needing first review). Thresholds are chosen on this same data, "
                "so they are optimistic for new data.</p>")
    return out + notes_html(ops.get("notes", []))


def aggregate_section(result: dict) -> str:
    out = ""
    for level, agg in (result.get("aggregate") or {}).items():
        out += f"<h4>{esc(level)}-level ({agg.get('n', 0)} {esc(level)}s)</h4>"
        out += f"<p>{esc(agg.get('label_rule', ''))}; score: {esc(agg.get('score', ''))}.</p>"
        out += table(["metric", "value"], [["ROC AUC", fmt(agg.get("auc"))], ["accuracy", fmt(agg.get("accuracy"))],
                                           ["sensitivity", fmt(agg.get("recall"))],
                                           ["specificity", fmt(agg.get("specificity"))]])
        out += notes_html(agg.get("notes", []))
        groups = agg.get("groups", [])
        rows = [[g["group"], g["n_patches"], g["n_positive"], g["label"], fmt(g["score"]), fmt(g["mean_p"]),
                 fmt(g["patch_accuracy"])] for g in groups[:100]]
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
    return (f"<p>data: <code>{esc(d.get('path'))}</code> (format {esc(d.get('format'))}), image_px "
            f"{esc(d.get('image_px'))}, max_per_split {esc(d.get('max_per_split'))}</p>" + table(header, rows))


def training_section(run: Run) -> str:
    png = run.path / "report" / "training_curves.png"
    if not png.is_file() and run.history is not None:
        from histoflow.evaluate.plots import history_plot

        png = history_plot(run.path / "history.csv", png)
    out = img_tag(png, "training curves", "wide")
    if run.history is not None and len(run.history):
        last = run.history.iloc[-1]
        out += "<p>last epoch: " + ", ".join(f"{esc(k)} {v:.4g}" if isinstance(v, float) else f"{esc(k)} {esc(v)}"
                                              for k, v in last.items()) + "</p>"
    return out


def environment_section(run: Run) -> str:
    env = run.metrics.get("environment") or {}
    rows = [["seed", run.config.get("seed")], ["training wall time (s)", run.metrics.get("train_seconds", "unknown")],
            ["best epoch", run.metrics.get("epoch")], ["device (evaluation)", env.get("device", "unknown")],
            ["platform", env.get("platform", "unknown")]]
    rows += [[k, v] for k, v in (env.get("versions") or {}).items()]
    return table(["item", "value"], rows, left=2)


def run_section(run: Run, level: int = 2) -> str:
    h = f"h{level}"
    parts = [f"<{h}>Data and splits</{h}>", data_section(run),
             f"<{h}>Training</{h}>", training_section(run)]
    for name, result in run.split_results.items():
        parts.append(f"<{h}>Evaluation: {esc(name)} split</{h}>")
        parts.append(metrics_section(result))
        figs = [img_tag(run.path / "report" / f"{kind}_{name}.png", f"{label}, {name}")
                for kind, label in (("roc", "ROC curve"), ("pr", "precision-recall curve"),
                                    ("confusion", "confusion matrix"), ("calibration", "reliability diagram"))]
        parts.append('<div class="figs">' + "".join(figs) + "</div>")
        parts.append(f"<h3>Operating points ({esc(name)})</h3>" + operating_section(result))
        if result.get("aggregate"):
            parts.append(f"<h3>Patient / slide level ({esc(name)})</h3>" + aggregate_section(result))
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
        parts.append(table(["category", "file", "label", "predicted", "probability"],
                           [[r.category, Path(r.path).name, r.label, r.predicted, f"{r.probability:.4f}"]
                            for r in g.itertuples()], left=4))
    parts.append(f"<{h}>Environment</{h}>" + environment_section(run))
    parts.append(f"<{h}>Resolved config</{h}><pre>{esc(run.config_text)}</pre>")
    problems = [f"missing: {m}" for m in run.missing] + run.notes
    return (f'<div class="missing">{"<br>".join(esc(p) for p in problems)}</div>' if problems else "") + "".join(parts)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{body}"
            f'<p style="color:#888;font-size:.8em">made by histoflow report; self-contained (no network needed)</p>'
            f"</body></html>")


def write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- comparison

def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def compare_section(runs: list[Run], out_dir: Path) -> str:
    names = [r.name for r in runs]
    split = next((s for s in SPLIT_KEYS if all(s in r.split_results for r in runs)), None)
    parts = []
    if split:
        rows = []
        for label, key in (("ROC AUC", "auc"), ("PR AUC", "pr_auc"), ("accuracy", "accuracy"),
                           ("sensitivity", "recall"), ("specificity", "specificity"), ("F1", "f1")):
            row = [label]
            for r in runs:
                res = r.split_results[split]
                ci = (res.get("ci") or {}).get("auc") if key == "auc" else None
                row.append(fmt(res.get(key), ci))
            rows.append(row)
        rows.append(["ECE"] + [fmt((r.split_results[split].get("calibration") or {}).get("ece")) for r in runs])
        for target in (1.0, 0.95):
            row = [f"specificity at sensitivity {target:g}"]
            for r in runs:
                pts = (r.split_results[split].get("operating_points") or {}).get("points", [])
                p = next((p for p in pts if p.get("target_sensitivity") == target), None)
                row.append(fmt(p["specificity"]) if p else "undefined")
            rows.append(row)
        rows.append(["training wall time (s)"] + [r.metrics.get("train_seconds", "unknown") for r in runs])
        parts.append(f"<h2>Side by side ({esc(split)} split)</h2>" + table(["metric", *names], rows))
        parts.append(notes_html(same_data_notes(runs, split)))
        roc = compare_roc(runs, split, out_dir / f".compare_roc_{split}.png")
        parts.append(img_tag(roc, "ROC curves compared"))
        if roc:
            roc.unlink()
    else:
        parts.append('<div class="note">the runs share no evaluated split: nothing to put side by side</div>')
    flat = [_flatten(r.config) for r in runs]
    keys = sorted(set().union(*flat) - {"name"})
    diff = [[k, *[flat[i].get(k, "-") for i in range(len(runs))]] for k in keys
            if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]
    parts.append("<h2>Config differences</h2>" + (table(["key", *names], diff) if diff else "<p>identical configs</p>"))
    return "".join(parts)


def same_data_notes(runs: list[Run], split: str) -> list[str]:
    """Differences between runs mean something only on the same images: say when they are not."""
    sets = [set(r.splits.loc[r.splits["split"] == split, "path"]) if r.splits is not None else None for r in runs]
    if any(s is None for s in sets):
        return [f"cannot tell whether the runs share their {split} images (a splits.csv is missing)"]
    if all(s == sets[0] for s in sets[1:]):
        return [f"all runs were evaluated on the same {len(sets[0])} {split} images"]
    return [f"the runs were evaluated on different {split} images: differences mix model and data"]


def compare_roc(runs: list[Run], split: str, path: Path) -> Path | None:
    from sklearn import metrics as skm

    from histoflow.evaluate.plots import _save, plt

    fig, ax = plt.subplots(figsize=(5, 5))
    drawn = False
    for r in runs:
        csv = r.path / f"predictions_{split}.csv"
        if not csv.is_file():
            continue
        pred = pd.read_csv(csv)
        pcols = [c for c in pred.columns if c.startswith("p_")]
        if len(pcols) != 2 or pred["label"].nunique() < 2:
            continue
        fpr, tpr, _ = skm.roc_curve(pred["label"], pred[pcols[1]])
        ax.plot(fpr, tpr, label=f"{r.name} (AUC {skm.auc(fpr, tpr):.3f})")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC, {split}")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------- entry points

def build_report(run_dirs, out: str | Path | None = None, gallery_n: int = 32, explain: bool = True) -> Path:
    """report.html of one run (default RUN_DIR/report.html) or a comparison of several."""
    run_dirs = [Path(p) for p in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    if not run_dirs:
        raise DataError("report: give at least one run folder")
    runs = [load_run(p) for p in run_dirs]
    if explain:
        for run in runs:
            ensure_gallery(run, n=gallery_n)
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
        out = Path(out) if out else run_dirs[0].parent / f"compare_{'_vs_'.join(r.name for r in runs)}.html"
        body = compare_section(runs, out.parent)
        body += "".join(f"<hr><h2>Run: {esc(r.name)} <small>({esc(r.path)})</small></h2>{run_section(r, 3)}"
                        for r in runs)
        title = "histoflow comparison: " + " vs ".join(r.name for r in runs)
    write_atomic(out, page(title, body))
    log.info("wrote %s", out)
    return out
