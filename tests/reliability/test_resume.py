"""--resume continues from one epoch-boundary checkpoint with every random state restored, so an
interrupted run ends with the uninterrupted run's weights; a resume after training finished goes
straight to evaluation and rewrites nothing training wrote (issue 15, items 2 and 5)."""

from __future__ import annotations

import json

import lightning as L
import pandas as pd
import pytest

from histoflow.core.errors import ConfigError
from histoflow.train.fit import fit
from histoflow.train.resume import DONE, RESUME_CKPT
from histoflow.workflows.run import run as run_training
from tests.reliability.common import same_weights, tiny, weights, without_timing


class Killed(Exception):
    """Stands in for a kill: training stops without any clean-up of histoflow's."""


class KillAt(L.Callback):
    def __init__(self, run_dir, epoch: int, batch: int):
        self.run_dir, self.epoch, self.batch = run_dir, epoch, batch
        self.checkpoints_seen: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self.checkpoints_seen = sorted(p.name for p in self.run_dir.glob("checkpoints/*.ckpt"))
            raise Killed


def _killed_then_resumed(cfg, out, epoch=1, batch=2):
    kill = KillAt(out, epoch, batch)
    with pytest.raises(Killed):
        fit(cfg, out, callbacks=[kill])
    assert kill.checkpoints_seen == [RESUME_CKPT]  # one resume checkpoint, no last.ckpt / last-v1.ckpt
    assert not (out / "checkpoints" / DONE).exists()
    return fit(cfg, out, resume=True)


@pytest.mark.parametrize(
    "extra",
    [
        # batch augmentation + dropout draw from torch's global RNG; shuffling from the loader's generator
        ("augment.dihedral=true", "augment.where=batch"),
        # a class-balanced sampler has its own generator
        pytest.param(("data.balance.sampler=true",), marks=pytest.mark.slow),
        # per-image augmentation in this process, thread workers for the validation images
        pytest.param(("augment.hflip=true", "augment.vflip=true", "data.num_workers=0"), marks=pytest.mark.slow),
    ],
)
def test_kill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path, extra):
    cfg = tiny("train.epochs=3", *extra)
    whole = fit(cfg, tmp_path / "whole")
    resumed = _killed_then_resumed(cfg, tmp_path / "resumed", epoch=1, batch=2)
    assert same_weights(weights(whole), weights(resumed))
    assert same_weights(weights(whole, "best.pt"), weights(resumed, "best.pt"))
    a, b = (pd.read_csv(r / "history.csv").drop(columns="seconds") for r in (whole, resumed))
    pd.testing.assert_frame_equal(a, b)


def test_resume_after_training_finished_evaluates_without_retraining(tmp_path):
    """A kill during evaluation: training_done.json says training finished; --resume evaluates."""
    cfg = tiny()
    out = run_training(cfg, tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    ckpts = out / "checkpoints"
    assert (ckpts / DONE).exists() and not list(ckpts.glob("*.ckpt"))
    kept = {
        p: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in (ckpts / "best.pt", ckpts / "last.pt", out / "history.csv", out / "splits.csv")
    }
    (out / "metrics.json").unlink()  # as if killed during the evaluation
    run_training(cfg, out, resume=True)
    for path, (data, mtime) in kept.items():
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime, f"{path.name} was rewritten"
    again = json.loads((out / "metrics.json").read_text())
    assert without_timing(again) == without_timing(metrics)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        run_training(cfg, out)


def test_resume_needs_something_to_resume(tmp_path):
    with pytest.raises(ConfigError, match="holds no .*resume.ckpt"):
        fit(tiny(), tmp_path / "nothing", resume=True)
    assert not (tmp_path / "nothing").exists()


def test_kill_in_the_first_epoch_resumes_from_the_start(tmp_path):
    """Killed before the first epoch-start checkpoint (config.yaml written, no resume.ckpt):
    --resume trains again from the beginning, which is the uninterrupted run."""
    cfg = tiny("train.epochs=1")
    whole = fit(cfg, tmp_path / "whole")
    out = fit(cfg, tmp_path / "killed")
    (out / "checkpoints" / DONE).unlink()  # as if killed after config.yaml, before any resume point
    assert not (out / "checkpoints" / RESUME_CKPT).exists()
    fit(cfg, out, resume=True)
    assert same_weights(weights(whole, "best.pt"), weights(out, "best.pt"))
    assert len(pd.read_csv(out / "history.csv")) == 1  # rewritten, not appended to
