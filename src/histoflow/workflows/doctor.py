"""`histoflow doctor`: what is installed and what works, in one table.

Installing native pathology libraries (OpenSlide, Java for Spark, CUDA) is the first pain of
every peer toolkit; this answers "will it work here?" before a long job finds out.
"""

from __future__ import annotations

import importlib
import platform
import shutil
import subprocess

from histoflow.core.version import CORE_PACKAGES


def _version(module: str) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is the answer we report
        return False, f"not available ({type(exc).__name__}: {exc})".splitlines()[0][:120]
    return True, str(getattr(mod, "__version__", "installed"))


def _openslide() -> tuple[bool, str]:
    try:
        import openslide

        return True, f"openslide-python {openslide.__version__}, library {openslide.__library_version__}"
    except Exception as exc:  # noqa: BLE001
        return False, f"not available ({exc}); pip install openslide-bin"


def _java() -> tuple[bool, str]:
    java = shutil.which("java")
    if not java:
        return False, "java not found (Spark engine needs Java 17+)"
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20)
        return True, (out.stderr or out.stdout).splitlines()[0]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"java failed: {exc}"


def _accelerator() -> tuple[bool, str]:
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return True, f"CUDA {torch.version.cuda}: {', '.join(names)}"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return True, "Apple MPS"
    return True, f"CPU only ({torch.get_num_threads()} threads)"


def checks() -> list[tuple[str, bool, str]]:
    rows = [("python", True, platform.python_version()), ("histoflow", *_version("histoflow"))]
    for name in (*CORE_PACKAGES, "cv2", "tifffile", "h5py", "pyarrow"):
        rows.append((name, *_version(name)))
    rows.append(("openslide", *_openslide()))
    rows.append(("accelerator", *_accelerator()))
    for name, extra in (
        ("pyspark", "spark"),
        ("optuna", "tune"),
        ("mlflow", "track"),
        ("pytorch_grad_cam", "explain"),
        ("torchstain", "stain"),
    ):
        ok, text = _version(name)
        rows.append((f"{name} [{extra}]", ok, text if ok else f"missing: pip install 'histoflow[{extra}]'"))
    rows.append(("java (spark)", *_java()))
    return rows
