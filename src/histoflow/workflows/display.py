"""Console views of histoflow's outputs (a data summary, a run's metrics), shared by the CLI
verbs and the demo so that both print the same tables."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def print_summary(console: Console, summary: dict) -> None:
    """The table `data inspect` and the demo print: images per split and class, then the rest."""
    table = Table(title=f"{summary['source']} ({summary['format']}, {summary['n_images']} images)")
    classes = summary["classes"] or ["(unlabelled)"]
    table.add_column("split")
    for c in classes:
        table.add_column(str(c), justify="right")
    table.add_column("total", justify="right")
    for split, counts in summary["counts"].items():
        values = [counts.get(c, counts.get("", 0)) for c in classes]
        table.add_row(split, *map(str, values), str(sum(counts.values())))
    console.print(table)
    for key in (
        "patients",
        "slides",
        "image_sizes",
        "converted_to_rgb",
        "channel_mean",
        "channel_std",
        "duplicate_groups",
        "duplicate_files",
        "duplicates_across_splits",
        "skipped",
    ):
        if key in summary:
            console.print(f"  {key}: {summary[key]}", highlight=False)
    for line in summary.get("skipped_files", [])[:10]:
        console.print(f"    skipped {line}", highlight=False, markup=False)


def print_metrics(console: Console, path: Path) -> None:
    """One line per evaluated split of a metrics.json (n, AUC, accuracy, F1...) and its notes."""
    if not path.exists():
        return
    payload = json.loads(path.read_text())
    for name, result in payload.items():
        if isinstance(result, dict) and "n" in result:
            figures = ", ".join(
                f"{k} {result[k]:.4f}"
                for k in ("auc", "accuracy", "f1", "recall", "specificity")
                if isinstance(result.get(k), (int, float))
            )
            console.print(f"  {name}: n {result['n']}, {figures}", highlight=False)
            for note in result.get("notes", []):
                console.print(f"    note: {note}", highlight=False)
