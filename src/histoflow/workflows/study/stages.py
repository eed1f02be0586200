"""Stages of a study: each runs once per settings, resumes when interrupted, redoes when changed.

A stage owns one folder under the study's output and writes `stage.json` there:
`{"fingerprint": ..., "status": "running" | "complete", "seconds": ..., "output": {...}}`.
The fingerprint hashes the stage's settings together with the signatures of the stages it reads
from, so changing a setting changes that stage's fingerprint and every fingerprint downstream of
it, and nothing upstream. Then:

- complete with the same fingerprint: skipped (its recorded output is reused);
- started with the same fingerprint but not complete (killed): run again with `resume=True`, and
  the stage's own resume (tiling, training, embedding all have one) picks up where it stopped;
- a different fingerprint: the folder is emptied and the stage runs from the start, so no output
  made with old settings survives beside new ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histoflow.core.errors import ConfigError
from histoflow.core.io import atomic_write_json

log = logging.getLogger(__name__)
MARKER = "stage.json"


def fingerprint(settings: Any) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class StageResult:
    name: str
    folder: Path
    fingerprint: str
    action: str  # ran | resumed | updated | redone | skipped
    seconds: float
    output: dict = field(default_factory=dict)

    @property
    def signature(self) -> str:
        """What downstream stages depend on: the settings and what the stage produced."""
        return fingerprint([self.fingerprint, self.output])


class Stages:
    """Runs the stages of one study and remembers what each did (for the report)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.results: list[StageResult] = []

    def run(
        self, name: str, settings: Any, work: Callable[[Path, bool], dict | None], always: bool = False
    ) -> StageResult:
        """Run `work(folder, resume)` unless its output is complete for these settings;
        `work` returns a JSON-able summary of its output (recorded, and part of the signature).
        `always`: a stage whose work is incremental by itself (tiling skips complete slides) is
        asked again even when complete, so new inputs are picked up."""
        folder = self.out / name
        fp = fingerprint(settings)
        marker = folder / MARKER
        state = json.loads(marker.read_text()) if marker.is_file() else None
        if state and state.get("fingerprint") == fp and state.get("status") == "complete" and not always:
            log.info("%s: up to date, skipped", name)
            return self._record(StageResult(name, folder, fp, "skipped", 0.0, state.get("output") or {}))
        if state is None and folder.exists() and any(folder.iterdir()):
            raise ConfigError(f"{folder}: exists and is not a study stage folder (no {MARKER}); choose another --out")
        action = "ran"
        if state and state.get("fingerprint") != fp:
            log.warning("%s: settings changed; redoing it and what depends on it", name)
            shutil.rmtree(folder)
            action = "redone"
        elif state:
            action = "resumed" if state.get("status") != "complete" else "updated"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, {"fingerprint": fp, "status": "running", "settings": settings})
        started = time.perf_counter()
        output = work(folder, action in ("resumed", "updated")) or {}
        seconds = round(time.perf_counter() - started, 1)
        if action == "updated" and output == (state or {}).get("output"):
            action = "skipped"  # asked again, nothing new (an `always` stage)
        atomic_write_json(
            marker,
            {"fingerprint": fp, "status": "complete", "seconds": seconds, "output": output, "settings": settings},
        )
        return self._record(StageResult(name, folder, fp, action, seconds, output))

    def _record(self, result: StageResult) -> StageResult:
        self.results.append(result)
        return result

    def summary(self) -> list[dict]:
        return [
            {"stage": r.name, "action": r.action, "seconds": r.seconds, "fingerprint": r.fingerprint}
            for r in self.results
        ]
