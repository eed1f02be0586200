"""Several runs side by side: headline metrics, a shared ROC plot and the config differences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pandas as pd

from histoflow.evaluate.html import esc, fmt, img_tag, notes_html, table
from histoflow.evaluate.run_folder import SPLIT_KEYS, Run


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict[str, Any] = {}
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
        for label, key in (
            ("ROC AUC", "auc"),
            ("PR AUC", "pr_auc"),
            ("accuracy", "accuracy"),
            ("sensitivity", "recall"),
            ("specificity", "specificity"),
            ("F1", "f1"),
        ):
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
    diff = [
        [k, *[flat[i].get(k, "-") for i in range(len(runs))]]
        for k in keys
        if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1
    ]
    parts.append("<h2>Config differences</h2>" + (table(["key", *names], diff) if diff else "<p>identical configs</p>"))
    return "".join(parts)


def same_data_notes(runs: list[Run], split: str) -> list[str]:
    """Differences between runs mean something only on the same images: say when they are not."""
    sets = [set(r.splits.loc[r.splits["split"] == split, "path"]) if r.splits is not None else None for r in runs]
    if any(s is None for s in sets):
        return [f"cannot tell whether the runs share their {split} images (a splits.csv is missing)"]
    if all(s == sets[0] for s in sets[1:]):
        return [f"all runs were evaluated on the same {len(cast(set, sets[0]))} {split} images"]  # none is None
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
