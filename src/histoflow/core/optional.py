"""Import heavy optional dependencies only where they are needed.

`require("pyspark", extra="spark")` returns the module, or raises an ImportError that tells the
user the exact pip command, instead of a bare ModuleNotFoundError deep in a stack trace.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only where the extra is missing
        raise ImportError(
            f"{module!r} is needed for this feature but is not installed: pip install 'histoflow[{extra}]'"
        ) from exc
