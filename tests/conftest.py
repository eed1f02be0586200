"""Shared fixtures: the real data folder (skip with a reason when absent) and marker handling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no weights from the hub here: fail fast, not after 46 s

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HISTOFLOW_DATA", REPO.parent / "shared" / "data"))


def need_data(*parts: str) -> Path:
    """Path under the shared real-data folder, or skip the test saying what is missing."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set HISTOFLOW_DATA to the folder holding it)")
    return path


@pytest.fixture
def data_dir() -> Path:
    return need_data()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="no CUDA GPU visible")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
