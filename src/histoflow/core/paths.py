"""Where histoflow looks for data when the user does not say."""

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
