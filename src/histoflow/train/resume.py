"""Resuming a run: one resume checkpoint at epoch boundaries, with every random state in it.

`checkpoints/resume.ckpt` (Lightning's checkpoint: weights, optimiser, scheduler, loop counters,
callback state) is written atomically at the start of every epoch after the first, and holds the
random states that the coming epoch will draw from: torch's (CPU and CUDA), numpy's, Python's, and
the train loader's own generators (shuffling order, balanced sampling). A `--resume` after a kill
at any point of epoch e therefore redoes epoch e from its start with exactly the random numbers
the uninterrupted run used: same batches, same augmentation, same dropout, same weights.

There are deliberately no mid-epoch checkpoints: Lightning cannot replay a partial epoch's data
order and random draws, so a mid-epoch resume gives a different model (issue 15: val AUC 0.887 vs
0.924). A kill costs at most the epoch in progress.

When training has finished, `checkpoints/training_done.json` is written and resume.ckpt removed:
a later `--resume` (after a kill during evaluation or the report) goes straight to the missing
stages and never retrains, never rewrites best.pt, last.pt or history.csv.

Limit: per-image augmentation in *process* DataLoader workers (augment.where: dataset with
data.num_workers > 0) draws from the workers' own generators, which live in other processes and
persist across epochs; a resumed run reseeds them from the restored loader generator, so its
augmentation (not its data order) differs from the uninterrupted run after the resume point.
augment.where: batch (the default recipe's) or num_workers: 0 resume exactly.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import cast

import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

from histoflow.core.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

RESUME_CKPT = "resume.ckpt"
DONE = "training_done.json"
LEGACY_CKPT = "last.ckpt"  # runs of histoflow before resume.ckpt


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a `--resume` of `run_dir` continues training from, or None."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    for name in (RESUME_CKPT, LEGACY_CKPT):
        if (ckpt_dir / name).exists():
            return ckpt_dir / name
    return None


def training_done(run_dir: Path) -> dict | None:
    """What `mark_training_done` recorded when this run's training finished, or None."""
    path = Path(run_dir) / "checkpoints" / DONE
    return json.loads(path.read_text()) if path.exists() else None


def can_resume(run_dir: Path) -> bool:
    """True when `run_dir` holds a run that `--resume` can continue or complete."""
    return training_done(run_dir) is not None or resume_checkpoint(run_dir) is not None


def mark_training_done(run_dir: Path, seconds: float, notes: list[str]) -> None:
    """Record that training finished (so --resume never retrains) and drop the resume checkpoint."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    atomic_write_json(ckpt_dir / DONE, {"train_seconds": round(seconds, 1), "notes": notes})
    for name in (RESUME_CKPT, LEGACY_CKPT):
        (ckpt_dir / name).unlink(missing_ok=True)


def loader_generators(loader) -> list[torch.Generator]:
    """The torch generators a loader shuffles or samples with (DataLoader, ThreadLoader, samplers)."""
    found: dict[int, torch.Generator] = {}
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (loader, getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator):
            found.setdefault(id(g), g)
    return list(found.values())


def _rng_state(generators: list[torch.Generator]) -> dict:
    # legacy=True (the default) gives the tuple form; numpy's stub returns it or the dict form
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generators: list[torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate(state["python"])
    saved = state["generators"]
    if len(saved) != len(generators):
        log.warning(
            "the resumed run samples with %d generator(s), the checkpoint holds %d: data order may differ",
            len(generators),
            len(saved),
        )
    for g, s in zip(generators, saved):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeCheckpoint(Checkpoint):
    """Writes `path` at the start of each epoch but the first one this process trains, with the
    random states the epoch is about to use (see the module docstring), and restores them.

    Why at epoch start: by then the previous epoch is complete (validation, early stopping,
    epoch-interval scheduler step all done), and nothing has drawn a random number for the new
    one yet. The first epoch of a process is skipped because Lightning builds its data iterator
    (and draws the shuffling order) before that epoch's start hook. A Lightning `Checkpoint`
    subclass, so that Lightning runs it after the other callbacks.

    Lightning (2.x) has no notion of "restart at the start of an epoch": a checkpoint written
    there restores its loops as if the previous epoch's batches were still pending and skips the
    epoch. So the loop state is written as "epoch e-1 fully completed" (`on_save_checkpoint`) and,
    once restored, the loops are told they are not restarting (`on_train_start`): epoch e then
    runs from its first batch with its start hooks and its end-of-epoch scheduler step, exactly as
    in the uninterrupted run (tests/reliability/test_resume.py checks it weight for weight)."""

    def __init__(self, path: Path, generators: list[torch.Generator]):
        self.path = Path(path)
        self.generators = generators
        self._first_epoch: int | None = None
        self._restored = False

    def state_dict(self) -> dict:
        return {"rng": _rng_state(self.generators), "at": "epoch_start"}

    def load_state_dict(self, state: dict) -> None:
        _set_rng_state(state["rng"], self.generators)
        self._restored = state.get("at") == "epoch_start"

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
        for counters in (progress["total"], progress["current"]):
            counters["ready"] = counters["started"]  # the new epoch: not begun yet

    def on_train_start(self, trainer, pl_module) -> None:
        self._first_epoch = trainer.current_epoch
        if self._restored:
            trainer.fit_loop.restarting = False  # a fresh epoch, not a half-done one
            self._restored = False

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self._first_epoch or trainer.sanity_checking:
            return
        if trainer.is_global_zero:
            with atomic_path(self.path) as tmp:
                trainer.save_checkpoint(tmp, weights_only=False)  # the whole state: --resume needs it
        else:
            trainer.save_checkpoint(self.path, weights_only=False)  # rank 0 writes; the others join its barrier
