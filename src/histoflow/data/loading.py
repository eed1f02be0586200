"""Loaders for histoflow datasets: batched decoding, seeded shuffling, and a choice of workers.

Two kinds of workers:
- processes (torch's DataLoader): any dataset, any per-image transform; batches come back to
  this process through shared memory.
- threads (`ThreadLoader`): for datasets whose batches decode outside the GIL (PatchDataset's
  batched path: file reads, libjpeg-turbo, numpy copies). No worker start-up, no pickling and
  no shared-memory pages to fault in, a large share of the decode work on small machines
  (bench/bench_data.py measures it). torch has no thread workers of its own, hence this small class.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, default_collate

from histoflow.data.datasets import StackedSamples


def collate(batch):
    """Batches `PatchDataset.__getitems__` stacked already pass through as `(images, labels)`;
    anything else goes to torch's default_collate."""
    if isinstance(batch, StackedSamples):
        return [batch.images, batch.labels]
    return default_collate(batch)


class ThreadLoader:
    """Batches of `dataset.__getitems__` decoded by `workers` threads, yielded in order, with at
    most 2 x workers batches in flight (bounded memory)."""

    def __init__(self, dataset, batch_size: int, workers: int, shuffle: bool = False, sampler=None, seed: int = 0):
        if workers < 1:
            raise ValueError("ThreadLoader needs workers >= 1")
        self.dataset, self.workers = dataset, workers
        generator = torch.Generator().manual_seed(seed)
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        self.sampler = sampler
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last=False)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        with ThreadPoolExecutor(self.workers, thread_name_prefix="histoflow-decode") as pool:
            pending: deque = deque()
            for indices in self.batch_sampler:
                pending.append(pool.submit(self.dataset.__getitems__, indices))
                if len(pending) >= 2 * self.workers:
                    yield collate(pending.popleft().result())
            while pending:
                yield collate(pending.popleft().result())


def decodes_without_gil(dataset) -> bool:
    """True when thread workers can decode this dataset's batches in parallel."""
    check = getattr(dataset, "decodes_without_gil", None)
    return bool(check()) if callable(check) else False


def make_loader(
    dataset,
    batch_size: int,
    workers: int,
    shuffle: bool = False,
    sampler=None,
    seed: int = 0,
    persistent: bool = True,
    threads: bool | None = None,
):
    """The loader every histoflow verb uses (training, evaluation, prediction, benchmarks).

    threads: None picks thread workers when the dataset decodes outside the GIL, else
    processes; training passes False (Lightning's distributed samplers need a DataLoader)."""
    if threads is None:
        threads = workers > 0 and decodes_without_gil(dataset)
    if threads and workers > 0:
        return ThreadLoader(dataset, batch_size, workers, shuffle=shuffle, sampler=sampler, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=persistent and workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
        generator=generator,
        collate_fn=collate,
    )
