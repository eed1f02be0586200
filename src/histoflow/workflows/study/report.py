"""A study's report: what each stage did, the two arms side by side, every held-out slide.

OUT/report.html is self-contained (images embedded) like a run's report; the tile classifier's
own report (tile-level ROC, training curves, Grad-CAM) stays in OUT/tile_model/report.html.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from histoflow.evaluate.html import esc, fmt, img_tag, notes_html, page, table


def _comparison_rows(comparison: dict) -> list[list]:
    return [
        [
            a["arm"],
            fmt(a["value"], a.get("ci")),
            fmt(a.get("accuracy"), a.get("accuracy_ci")),
            fmt(a.get("validation")),
        ]
        for a in comparison.get("arms", [])
    ]


def render_study_report(out: Path, record: dict) -> str:
    out = Path(out)
    comparison = (record.get("evaluation") or {}).get("comparison") or {}
    body = (
        f"<p>Task: <b>{esc(record['task'])}</b>, classes {esc(', '.join(record['classes']))}; "
        f"{record['slides']} slides given, {len(record['tiles'].get('complete', []))} tiled "
        f"({record['tiles'].get('tiles')} tiles kept).</p>"
    )
    body += notes_html(record.get("notes") or [])
    if comparison.get("arms"):
        body += f"<h2>Held-out slides: tiles + aggregation vs attention MIL ({esc(comparison['split'])})</h2>"
        if comparison.get("verdict"):
            body += f'<div class="headline">{esc(comparison["verdict"])}</div>'
        body += table(
            ["arm", f"{comparison['metric']} (95% CI)", "accuracy (95% CI)", f"validation {comparison['metric']}"],
            _comparison_rows(comparison),
        )
        body += (
            "<p>The tile arm's aggregation, every threshold and every cut point were chosen on the validation "
            "slides and applied unchanged to these slides.</p>"
        )
    body += notes_html(comparison.get("notes", []))
    metrics_path = out / "evaluation" / "metrics.json"
    if metrics_path.is_file():
        from histoflow.evaluate.slide_report import slides_section

        slides = json.loads(metrics_path.read_text()).get("slides") or {}
        body += "<h2>Slide-level results</h2>" + slides_section(slides, out / "evaluation")
    heatmaps = sorted((out / "heatmaps").glob("*/heatmap.png"))[:12]
    if heatmaps:
        body += "<h2>Heatmaps of held-out slides (predict-slide)</h2><div class='figs'>"
        body += "".join(img_tag(p, p.parent.name) for p in heatmaps) + "</div>"
    body += "<h2>Stages</h2>" + table(
        ["stage", "this run", "seconds", "fingerprint"],
        [[s["stage"], s["action"], s["seconds"], s["fingerprint"]] for s in record["stages"]],
    )
    body += (
        '<p>Tile-level results, training curves and Grad-CAM: <a href="tile_model/report.html">'
        "tile_model/report.html</a>.</p>"
    )
    return page(f"Study {record['name']}", body)


def print_study(console: Console, record: dict) -> None:
    """The stages and the headline comparison, as `histoflow study` prints them."""
    stages = Table(title=f"study {record['name']} ({record['task']})")
    for col in ("stage", "this run", "seconds"):
        stages.add_column(col)
    for s in record["stages"]:
        stages.add_row(s["stage"], s["action"], str(s["seconds"]))
    console.print(stages)
    for note in record.get("notes") or []:
        console.print(f"  note: {note}", highlight=False)
    comparison = (record.get("evaluation") or {}).get("comparison") or {}
    for a in comparison.get("arms", []):
        console.print(
            f"  {comparison['split']}: {a['arm']}: {a['metric']} {fmt(a['value'], a.get('ci'))}", highlight=False
        )
    if comparison.get("verdict"):
        console.print(f"  {comparison['verdict']}", highlight=False)
