"""Training end to end on tiny subsets of real PCam patches: outputs, determinism, resume,
NaN loss, bad checkpoints, multi-class, baselines, freezing, evaluate/predict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from histoflow.checkpoint import Checkpoint, load_checkpoint
from histoflow.config import load_config
from histoflow.core.errors import CheckpointError, ConfigError, DataError, TrainingError
from histoflow.evaluate.run import evaluate_checkpoint
from histoflow.predict.folder import predict_to_csv
from histoflow.train.fit import fit
from histoflow.workflows.run import run as run_training
from tests.conftest import need_data
from tests.helpers import TINY_RUN, tiny_config

TINY = TINY_RUN


def tiny(*extra, data=None):
    return tiny_config(*extra, data=data)


def test_fit_writes_a_complete_run_folder(tmp_path):
    run = run_training(tiny("augment.dihedral=true", "train.tta=true"), tmp_path / "run")
    for name in (
        "config.yaml",
        "splits.csv",
        "history.csv",
        "metrics.json",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "checkpoints/training_done.json",
        "report/roc_val.png",
        "report/training_curves.png",
    ):
        assert (run / name).exists(), name
    assert not list((run / "checkpoints").glob("*.ckpt"))  # the resume checkpoint goes once training is done
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [0, 1] and {"train_loss", "val_loss", "val_auc"} <= set(history.columns)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (
        "n",
        "auc",
        "pr_auc",
        "accuracy",
        "balanced_accuracy",
        "precision",
        "recall",
        "specificity",
        "f1",
        "confusion_matrix",
        "threshold",
    ):
        assert key in metrics["val"], key
    assert metrics["val"]["n"] == 48 and "val_tta" in metrics
    _, ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ckpt.class_names == ["0", "1"] and ckpt.image_px == 32
    assert ckpt.model_config["name"] == "simple_cnn" and ckpt.histoflow_version
    splits = pd.read_csv(run / "splits.csv")
    assert set(splits["split"]) == {"train", "val"}


def test_same_seed_same_weights(tmp_path):
    a = fit(tiny(), tmp_path / "a")
    b = fit(tiny(), tmp_path / "b")
    c = fit(tiny("seed=7"), tmp_path / "c")
    sa, sb, sc = (Checkpoint.read(r / "checkpoints" / "last.pt").state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_thread_workers_train_deterministically(tmp_path, monkeypatch):
    """On one device, images decode on thread workers (ThreadLoader); same seed, same weights."""
    from histoflow.data.loading import ThreadLoader

    passes = []
    original = ThreadLoader.__iter__
    monkeypatch.setattr(ThreadLoader, "__iter__", lambda self: passes.append(1) or original(self))
    a = fit(tiny("data.num_workers=2", "augment.dihedral=true", "augment.where=batch"), tmp_path / "a")
    b = fit(tiny("data.num_workers=2", "augment.dihedral=true", "augment.where=batch"), tmp_path / "b")
    sa, sb = (Checkpoint.read(r / "checkpoints" / "last.pt").state_dict() for r in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert len(pd.read_csv(a / "history.csv")) == 2
    assert len(passes) >= 4  # train and val passes of both runs went through the thread workers


def test_ema_checkpoints_hold_the_averaged_weights_that_were_validated(tmp_path):
    raw = run_training(tiny(), tmp_path / "raw")
    ema = run_training(tiny("train.ema_decay=0.9"), tmp_path / "ema")
    # EMA never changes the raw training trajectory, so any difference is the averaging
    s_raw, s_ema = (Checkpoint.read(r / "checkpoints" / "last.pt").state_dict() for r in (raw, ema))
    assert not all(torch.equal(s_raw[k], s_ema[k]) for k in s_raw)
    history = pd.read_csv(ema / "history.csv")
    best = Checkpoint.read(ema / "checkpoints" / "best.pt")
    validated = history.loc[history["epoch"] == best.epoch, "val_auc"].item()
    evaluated = json.loads((ema / "metrics.json").read_text())["val"]["auc"]
    assert evaluated == pytest.approx(validated, abs=1e-5)  # best.pt is what was validated: the average
    with pytest.raises(ConfigError, match="ema_decay"):
        tiny("train.ema_decay=1.5")


def test_existing_run_needs_resume(tmp_path):
    fit(tiny("train.epochs=1"), tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        fit(tiny("train.epochs=1"), tmp_path / "run")
    with pytest.raises(ConfigError, match="holds no .*resume.ckpt .*to resume from"):
        fit(tiny(), tmp_path / "other", resume=True)


class PoisonWeights:
    """Simulates a numeric blow-up: weights become NaN at the start of epoch 1."""

    def __new__(cls):
        import lightning as L

        class _Poison(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                if trainer.current_epoch == 1:
                    with torch.no_grad():
                        for p in pl_module.model.head.parameters():
                            p.fill_(float("nan"))

        return _Poison()


def test_nan_loss_stops_clearly_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, batch 0.*last good checkpoint"):
        fit(tiny("train.epochs=3"), tmp_path / "run", callbacks=[PoisonWeights()])
    model, ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert ckpt.epoch == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_checkpoints(tmp_path):
    run = fit(tiny("train.epochs=1"), tmp_path / "run")
    blob = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    blob["format_version"] = 99
    torch.save(blob, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="checkpoint format 99 .* cannot be read"):
        load_checkpoint(tmp_path / "future.pt")
    blob["format_version"] = 1
    blob["model_config"]["params"] = {"widths": [8, 32]}
    torch.save(blob, tmp_path / "other_arch.pt")
    with pytest.raises(CheckpointError, match="weights do not fit architecture 'simple_cnn'"):
        load_checkpoint(tmp_path / "other_arch.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a histoflow checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_evaluate_rejects_unknown_classes_and_resizes_other_sizes(tmp_path):
    run = fit(tiny("train.epochs=1"), tmp_path / "run")
    ckpt = run / "checkpoints" / "best.pt"
    with pytest.raises(
        DataError, match=r"class\(es\) \['benign', 'malignant'\] are not known to the model \(it knows \['0', '1'\]\)"
    ):
        evaluate_checkpoint(ckpt, need_data("breakhis"), tmp_path / "ev")
    # IDC patches are 50 px (one 32x50); the 32 px model resizes them as its checkpoint says
    result = evaluate_checkpoint(ckpt, need_data("idc", "8975"), tmp_path / "idc")
    assert result["data"]["n"] == 103 and 0 <= result["data"]["auc"] <= 1


def test_predict_on_bare_unlabelled_folder(tmp_path):
    run = fit(tiny("train.epochs=1"), tmp_path / "run")
    frame = predict_to_csv(run / "checkpoints" / "best.pt", need_data("kaggle_hcd"), tmp_path / "p.csv", tta=True)
    assert len(frame) == 18 and list(frame.columns) == ["path", "p_0", "p_1", "predicted"]
    assert ((frame["p_0"] + frame["p_1"] - 1).abs() < 1e-5).all()
    assert pd.read_csv(tmp_path / "p.csv").shape == (18, 4)


def test_multiclass_cross_entropy(tmp_path):
    rows = []
    for label, folder in (("normal", need_data("pcam", "valid", "0")), ("tumour", need_data("pcam", "valid", "1"))):
        rows += [(str(p), label) for p in sorted(folder.glob("*.jpg"))[:30]]
    rows += [(str(p), "breast") for p in sorted(need_data("breakhis").rglob("*.png"))[:30]]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "m.csv", index=False)
    cfg = tiny(
        "data.split.test_fraction=0.2",
        "data.split.val_fraction=0.2",
        "train.label_smoothing=0.1",
        "data.balance.loss_weights=true",
        data=tmp_path / "m.csv",
    )
    run = run_training(cfg, tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"val", "test"}
    assert set(metrics["val"]["per_class"]) == {"breast", "normal", "tumour"}
    assert {"f1_macro", "f1_weighted"} <= set(metrics["val"])
    model, _ = load_checkpoint(run / "checkpoints" / "best.pt")
    assert model.num_outputs == 3


def test_logistic_regression_baseline_beats_chance(tmp_path):
    cfg = load_config(
        None,
        [
            f"data.path={need_data('pcam')}",
            "data.max_per_split=400",
            "data.num_workers=0",
            "model.name=logistic_regression",
            "normalize.kind=imagenet",
        ],
    )
    run = run_training(cfg, tmp_path / "run")
    auc = json.loads((run / "metrics.json").read_text())["val"]["auc"]
    assert auc > 0.7  # colour histograms carry real signal on PCam (about 0.86 on the full data)


def test_freeze_backbone_keeps_backbone_weights(tmp_path):
    base = fit(tiny("train.epochs=1"), tmp_path / "base")
    cfg = tiny("model.freeze=backbone", f"model.weights={base / 'checkpoints' / 'best.pt'}")
    run = fit(cfg, tmp_path / "frozen")
    before = Checkpoint.read(base / "checkpoints" / "best.pt").state_dict()
    after = Checkpoint.read(run / "checkpoints" / "last.pt").state_dict()
    backbone = [k for k in before if k.startswith("backbone.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])


def test_head_then_full_unfreezes(tmp_path):
    base = fit(tiny("train.epochs=1"), tmp_path / "base")
    cfg = tiny(
        "model.freeze=head_then_full",
        "model.head_epochs=1",
        "train.epochs=2",
        f"model.weights={base / 'checkpoints' / 'best.pt'}",
    )
    run = fit(cfg, tmp_path / "run")
    before = Checkpoint.read(base / "checkpoints" / "best.pt").state_dict()
    after = Checkpoint.read(run / "checkpoints" / "last.pt").state_dict()
    assert not torch.equal(before["backbone.body.0.weight"], after["backbone.body.0.weight"])
    assert len(pd.read_csv(run / "history.csv")) == 2


def _train_cmd(out, *extra):
    return [
        sys.executable,
        "-m",
        "histoflow.cli",
        "--quiet",
        "train",
        "--out",
        str(out),
        "--set",
        f"data.path={need_data('pcam')}",
        *sum((["--set", o] for o in TINY + list(extra)), []),
    ]


@pytest.mark.slow
def test_kill_mid_training_then_resume(tmp_path):
    out = tmp_path / "run"
    cmd = _train_cmd(out, "train.epochs=12", "data.max_per_split=400")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (out / "history.csv").exists() or len(pd.read_csv(out / "history.csv")) < 2:
        assert time.time() < deadline and proc.poll() is None, "training did not reach epoch 2"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up: like a power cut
    proc.wait()
    done_before = len(pd.read_csv(out / "history.csv"))
    assert done_before < 12
    result = subprocess.run(
        [sys.executable, "-m", "histoflow.cli", "--quiet", "train", "--out", str(out), "--resume"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == list(range(12))
    assert json.loads((out / "metrics.json").read_text())["val"]["n"] == 400


@pytest.mark.slow
def test_ddp_two_cpu_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(
        _train_cmd(out, "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(pd.read_csv(out / "history.csv")) == 2
    assert (out / "metrics.json").exists()


def test_stain_normalisation_travels_in_the_checkpoint(tmp_path):
    target = need_data("stills", "tiatoolbox_target_image.png")
    run = fit(
        tiny(
            "train.epochs=1",
            "preprocess.stain_norm=macenko",
            f"preprocess.target={target}",
            "augment.hed_jitter={sigma: 0.05, bias: 0.05}",
        ),
        tmp_path / "run",
    )
    _, ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ckpt.preprocess["stain_norm"] == "macenko" and ckpt.preprocess["normalizer"]
    copy = tmp_path / "target_gone.png"  # prediction must not need the target image any more
    assert not copy.exists()
    from histoflow.data.datasets import dataset_for_checkpoint
    from histoflow.data.manifest import read_manifest

    ds = dataset_for_checkpoint(read_manifest(need_data("kaggle_hcd")), ckpt, labelled=False)
    assert ds.preprocess is not None
    raw = ds.preprocess  # normalised pixels differ from the raw file
    from histoflow.core.images import read_image

    img = read_image(ds.path(0))
    assert (raw(img) != img).any()
    frame = predict_to_csv(run / "checkpoints" / "best.pt", need_data("kaggle_hcd"), tmp_path / "p.csv")
    assert len(frame) == 18


@pytest.mark.gpu
def test_mixed_precision_training_on_gpu_then_predict_on_cpu(tmp_path):
    """precision auto on CUDA means bf16/16-mixed; the checkpoint must still load and predict on a CPU."""
    from histoflow.train.fit import resolve_precision

    assert resolve_precision("auto", "gpu") in ("bf16-mixed", "16-mixed")
    run = run_training(
        tiny(
            "train.accelerator=gpu",
            "train.deterministic=false",
            "augment.dihedral=true",
            "augment.where=batch",
            "train.tta=true",
        ),
        tmp_path / "run",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["environment"]["device"].startswith("CUDA")
    assert 0.0 <= metrics["val"]["auc"] <= 1.0 and metrics["val_tta"]["n"] == 48
    model, _ = load_checkpoint(run / "checkpoints" / "best.pt", device="cpu")
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    images = tmp_path / "images"
    images.mkdir()
    for src in sorted(need_data("pcam", "valid", "1").iterdir())[:16]:
        (images / src.name).write_bytes(src.read_bytes())
    frame = predict_to_csv(run / "checkpoints" / "best.pt", images, tmp_path / "p.csv")
    assert len(frame) == 16 and frame["p_1"].between(0, 1).all()
