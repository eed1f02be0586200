"""`build_report(run_dirs)`: make what a report needs, then render it (`histoflow report`)."""

from __future__ import annotations

from pathlib import Path


def build_report(run_dirs, out: str | Path | None = None, gallery_n: int = 32, explain: bool = True) -> Path:
    """report.html of one run (default RUN_DIR/report.html) or a comparison of several.

    Missing pieces are made first (training curves; the Grad-CAM gallery unless `explain` is
    False), then the page is rendered from the run folders alone.
    """
    from histoflow.evaluate.gallery import prepare_report
    from histoflow.evaluate.report import render_report

    return render_report(prepare_report(run_dirs, gallery_n=gallery_n, explain=explain), out)
