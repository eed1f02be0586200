"""Training throughput of histoflow's `fit` against a plain hand-written PyTorch loop with the
same model, data, batch size, augmentation and optimiser, in the same run. Target: >= 95%.

Both time the second epoch's training batches only (the first warms up allocators and caches);
data is the real PCam patches, cached in memory as in the default recipe.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from histoflow.config import load_config
from histoflow.core.runtime import keep_freed_memory_in_heap
from histoflow.data.batch_augment import BatchAugment
from histoflow.data.loading import make_loader
from histoflow.models.factory import create_model
from histoflow.train.data import build_run_data
from histoflow.train.fit import fit

DATA = Path(os.environ.get("HISTOFLOW_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
OVERRIDES = [
    "data.max_per_split=3072",
    "train.epochs=2",
    "train.tta=false",
    "data.verify=false",
    "normalize.kind=imagenet",
    "train.scheduler.name=onecycle",
]


class EpochTimer(L.Callback):
    def __init__(self):
        self.seconds, self.images = {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self._start = time.perf_counter()
            self.images[trainer.current_epoch] = 0
        self.images[trainer.current_epoch] += len(batch[1])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds[trainer.current_epoch] = time.perf_counter() - self._start


def plain_loop(cfg) -> float:
    """What a user would write by hand: same data, model, augmentation, optimiser, schedule, and
    the same numerics mode: the recipe trains deterministically (train.deterministic), and
    PyTorch's deterministic kernels cost ~5% per step on their own (108 vs 114 ms here), which is
    not framework overhead."""
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(cfg.train.deterministic)
    data = build_run_data(cfg)
    model = create_model(cfg.model, 2, mean=data.mean, std=data.std).to(memory_format=torch.channels_last)
    augment = BatchAugment(cfg.augment)
    loader = make_loader(data.train, cfg.train.batch_size, cfg.data.num_workers, shuffle=True, seed=cfg.seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.optimizer.lr, weight_decay=cfg.train.optimizer.weight_decay
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.train.optimizer.lr, total_steps=2 * len(loader), pct_start=cfg.train.scheduler.pct_start
    )
    rate = 0.0
    for _epoch in range(2):
        model.train()
        start, seen = time.perf_counter(), 0
        for x, y in loader:
            x = augment(x).contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1), y.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
        rate = seen / (time.perf_counter() - start)
    return rate


def histoflow_fit(cfg) -> float:
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        fit(cfg, Path(tmp) / "run", callbacks=[timer], quiet=True)
    return timer.images[1] / timer.seconds[1]


def main() -> dict:
    pcam = DATA / "pcam"
    if not pcam.exists():
        print(json.dumps({"bench": "train_throughput", "skipped": f"no data at {pcam}"}))
        return {}
    keep_freed_memory_in_heap()  # histoflow's fit does this; give the plain loop the same allocator
    recipe = Path(__file__).resolve().parents[1] / "configs" / "pcam_simple_cnn.yaml"
    cfg = load_config(recipe, [f"data.path={pcam}", *OVERRIDES])
    plain, ours = [], []
    for _ in range(2):  # interleaved
        plain.append(plain_loop(cfg))
        ours.append(histoflow_fit(cfg))
    out = {
        "bench": "train_throughput",
        "model": cfg.model.name,
        "params": cfg.model.params,
        "images_per_epoch": 3072,
        "batch_size": cfg.train.batch_size,
        "plain_loop_img_s": round(max(plain), 1),
        "histoflow_fit_img_s": round(max(ours), 1),
        "ratio": round(max(ours) / max(plain), 3),
        "target_ratio": 0.95,
        "all_runs": {"plain": [round(v, 1) for v in plain], "histoflow": [round(v, 1) for v in ours]},
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
