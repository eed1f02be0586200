"""A run folder read once: config.yaml, metrics.json, splits.csv, history.csv (nothing computed)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from histoflow.core.errors import DataError

REQUIRED = ("config.yaml", "metrics.json")
SPLIT_KEYS = ("val", "test", "val_tta", "test_tta", "data")


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
        hint = (
            " (the run has a checkpoint: `histoflow evaluate --checkpoint "
            f"{run_dir / 'checkpoints' / 'best.pt'} ...` or re-run training)"
            if (run_dir / "checkpoints" / "best.pt").is_file()
            else " (did training finish?)"
        )
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


def load_runs(run_dirs) -> list[Run]:
    """One run folder or several, each read by `load_run`; at least one is needed."""
    run_dirs = [Path(p) for p in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    if not run_dirs:
        raise DataError("report: give at least one run folder")
    return [load_run(p) for p in run_dirs]
