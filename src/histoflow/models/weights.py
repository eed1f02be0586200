"""Reading weight files from disk: `torch.load` with errors that name the file.

Both local backbone weights (`model.weights`) and histoflow checkpoints go through
`load_torch_file`, so a missing or unreadable file always gets the same clear message.
"""

from __future__ import annotations

from pathlib import Path

import torch

from histoflow.core.errors import CheckpointError


def load_torch_file(path: str | Path, what: str = "checkpoint") -> object:
    """torch.load on CPU with errors that name the file: missing, or not a readable checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # any unpickling error means an unusable file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
