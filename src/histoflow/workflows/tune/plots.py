"""Optuna's study plots: PNG through matplotlib (a core dependency), HTML when plotly is installed.

Each plot is written on its own: a plot Optuna cannot draw yet (parameter importances need at
least two completed trials with different values) is skipped with a logged reason, never fatal.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

from histoflow.core.io import atomic_path

log = logging.getLogger(__name__)

PLOTS = ("optimization_history", "param_importances", "intermediate_values")


def _save_png(fig_or_ax, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = fig_or_ax.figure if hasattr(fig_or_ax, "figure") else fig_or_ax
    if hasattr(fig_or_ax, "flat"):  # an array of axes (some plots draw a grid)
        fig = fig_or_ax.flat[0].figure
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_plots(study, folder: Path) -> dict[str, list[str]]:
    """Write the plots; returns {"written": [...], "skipped": ["name: reason", ...]}."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from optuna import visualization as vis
    from optuna.visualization import matplotlib as vis_mpl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    skipped: list[str] = []
    html = importlib.util.find_spec("plotly") is not None
    if not html:
        skipped.append("*.html: plotly is not installed (pip install plotly for interactive plots)")
    for name in PLOTS:
        try:
            with warnings.catch_warnings():
                # Optuna marks its matplotlib backend experimental; the warning is noise in every run
                warnings.simplefilter("ignore")
                _save_png(getattr(vis_mpl, f"plot_{name}")(study), folder / f"{name}.png")
                written.append(f"{name}.png")
                if html:
                    fig = getattr(vis, f"plot_{name}")(study)
                    with atomic_path(folder / f"{name}.html") as tmp:
                        fig.write_html(str(tmp), include_plotlyjs="cdn")
                    written.append(f"{name}.html")
        except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn yet must not fail the study
            skipped.append(f"{name}: {exc}")
    for line in skipped:
        log.info("plot skipped: %s", line)
    return {"written": written, "skipped": skipped}
