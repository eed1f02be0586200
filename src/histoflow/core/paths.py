"""Where histoflow looks for data and recipes when the user does not say."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """The folder holding datasets: $HISTOFLOW_DATA, else ./data."""
    return Path(os.environ.get("HISTOFLOW_DATA", "data")).expanduser()


def expand(path: str | os.PathLike) -> Path:
    """Expand ~ and ${VARS}; ${HISTOFLOW_DATA} falls back to data_root() when unset."""
    text = str(path)
    if "HISTOFLOW_DATA" in text and "HISTOFLOW_DATA" not in os.environ:
        text = text.replace("${HISTOFLOW_DATA}", str(data_root())).replace("$HISTOFLOW_DATA", str(data_root()))
    return Path(os.path.expandvars(text)).expanduser()


def recipe_dirs() -> list[Path]:
    """Folders holding histoflow's recipes: the source checkout's configs/ (an editable install),
    then where a wheel installs them (<prefix>/share/histoflow/configs)."""
    import sys

    return [Path(__file__).resolve().parents[3] / "configs", Path(sys.prefix) / "share" / "histoflow" / "configs"]


def find_recipe(name: str | os.PathLike) -> Path | None:
    """A recipe by bare name (`pcam_simple_cnn`, `pcam_simple_cnn.yaml`, `mil/pcam_bags`), or None."""
    text = str(name)
    if os.path.isabs(text) or text.startswith("."):
        return None
    names = [text] if text.endswith((".yaml", ".yml")) else [f"{text}.yaml", text]
    for folder in recipe_dirs():
        for n in names:
            candidate = folder / n
            if candidate.is_file():
                return candidate
    return None


def recipe_names() -> list[str]:
    """Every recipe a bare name can reach, as `histoflow train NAME` takes it."""
    found: set[str] = set()
    for folder in recipe_dirs():
        found |= {str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml")}
    return sorted(found)
