"""What an evaluation ran on: versions, device, threads; recorded in metrics.json and the report."""

from __future__ import annotations

import importlib
import platform

from histoflow.core.version import CORE_PACKAGES


def environment() -> dict:
    import torch

    versions = {"python": platform.python_version()}
    for name in ("histoflow", *CORE_PACKAGES, "pytorch_grad_cam", "numpy"):
        try:
            versions[name] = str(getattr(importlib.import_module(name), "__version__", "installed"))
        except ImportError:
            versions[name] = "not installed"
    if torch.cuda.is_available():
        device = f"CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}"
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {"versions": versions, "device": device, "platform": platform.platform()}
