"""The public API stays what `__all__` promises, whatever else is imported.

The bug this guards against: `histoflow.evaluate` and `histoflow.predict` were functions until the
subpackages of the same names were imported, then Python's import system replaced them with the
modules.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import types

import histoflow


def _top_level_modules() -> set[str]:
    return {m.name for m in pkgutil.iter_modules(histoflow.__path__)}


def test_no_public_name_is_a_subpackage_name():
    clash = set(histoflow.__all__) & _top_level_modules()
    assert not clash, f"public names shadowed by subpackages on import: {sorted(clash)}"


def test_public_names_survive_importing_every_subpackage():
    before = {name: getattr(histoflow, name) for name in histoflow.__all__}
    for name in sorted(_top_level_modules()):
        importlib.import_module(f"histoflow.{name}")
    for name, value in before.items():
        after = getattr(histoflow, name)
        assert after is value, f"histoflow.{name} changed after importing the subpackages"
        assert not isinstance(after, types.ModuleType), f"histoflow.{name} is a module"


def test_public_api_is_small_and_importable():
    assert len(histoflow.__all__) <= 18
    assert all(hasattr(histoflow, name) for name in histoflow.__all__)
    assert histoflow.fit.__module__ == "histoflow.train.fit"
    assert histoflow.run.__module__ == "histoflow.workflows.run"
    assert histoflow.view.__module__ == "histoflow.viewer.server"  # the slide lab's app (package: viewer)


def test_importing_histoflow_does_not_import_torch():
    """Tiling workers import histoflow for its light names; torch loads only when asked for."""
    code = "import sys, histoflow; histoflow.RunConfig; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
