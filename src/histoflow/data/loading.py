"""DataLoaders for histoflow datasets: batched decoding, persistent workers, seeded shuffling."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate

from histoflow.data.datasets import StackedSamples


def collate(batch):
    """Batches `PatchDataset.__getitems__` stacked already pass through as `(images, labels)`;
    anything else goes to torch's default_collate."""
    if isinstance(batch, StackedSamples):
        return [batch.images, batch.labels]
    return default_collate(batch)


def make_loader(dataset, batch_size: int, workers: int, shuffle: bool = False, sampler=None, seed: int = 0,
                persistent: bool = True) -> DataLoader:
    """The DataLoader every histoflow verb uses (training, evaluation, prediction, benchmarks)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, persistent_workers=persistent and workers > 0,
                      pin_memory=torch.cuda.is_available(), drop_last=False, generator=generator,
                      collate_fn=collate)
