"""Class imbalance and slide imbalance: a class-balanced sampler, class weights for the loss, and
per-epoch tile draws from whole slides."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(labels[labels >= 0], minlength=n_classes)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 (a class absent from training gets 0)."""
    counts = class_counts(labels, n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def balanced_sampler(
    labels: np.ndarray, n_classes: int, seed: int = 0, num_samples: int | None = None
) -> WeightedRandomSampler:
    """Draw each class equally often (with replacement), like a balanced epoch."""
    per_class = class_weights(labels, n_classes).numpy()
    weights = per_class[labels]
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        # torch's stub says Sequence[float]; the sampler takes a tensor (torch.as_tensor inside)
        torch.as_tensor(weights, dtype=torch.double),  # type: ignore[arg-type]
        num_samples or len(labels),
        replacement=True,
        generator=generator,
    )


class SlideEpochSampler(Sampler[int]):
    """Tiles of whole slides, drawn afresh every epoch so large slides do not dominate.

    Each epoch takes at most `per_slide` tiles of every slide (a new random subset each epoch:
    over epochs the model still sees all of a large slide). With `balance_classes`, the epoch's
    draws go to slides with classes weighted equally and slides within a class equally, so a
    class with few slides is not drowned out; a slide's class is its most common tile label.
    Then the epoch keeps its size (the sum of the caps) and a slide of a rare class may give
    more than `per_slide` tiles, repeating them once it has no new ones: balance wins over the cap.
    The generator is the sampler's own: `--resume` restores it with the loader's other states.
    """

    def __init__(
        self,
        slides: np.ndarray,
        labels: np.ndarray,
        per_slide: int | None = None,
        balance_classes: bool = False,
        seed: int = 0,
    ):
        slides = np.asarray(slides)
        _, slide_index = np.unique(slides, return_inverse=True)
        order = np.argsort(slide_index, kind="stable")
        bounds = np.flatnonzero(np.diff(slide_index[order])) + 1
        self.members = [torch.from_numpy(m) for m in np.split(order, bounds)] if len(order) else []
        self.per_slide = per_slide
        self.balance_classes = balance_classes
        labels = np.asarray(labels)
        self.slide_class = np.array(
            [np.bincount(labels[m.numpy()][labels[m.numpy()] >= 0]).argmax() for m in self.members]
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.n = sum(len(m) if per_slide is None else min(per_slide, len(m)) for m in self.members)

    def __len__(self) -> int:
        return self.n

    def _draws_per_slide(self) -> torch.Tensor:
        if not self.balance_classes:
            return torch.tensor(
                [len(m) if self.per_slide is None else min(self.per_slide, len(m)) for m in self.members]
            )
        classes, slides_in_class = np.unique(self.slide_class, return_counts=True)
        per_class = dict(zip(classes.tolist(), slides_in_class.tolist()))
        weights = torch.tensor([1.0 / per_class[c] for c in self.slide_class.tolist()], dtype=torch.double)
        picks = torch.multinomial(weights, self.n, replacement=True, generator=self.generator)
        return torch.bincount(picks, minlength=len(self.members))

    def __iter__(self):
        chosen = []
        for members, k in zip(self.members, self._draws_per_slide().tolist()):
            if k == 0:
                continue
            # without replacement while the slide has tiles left, then around again
            rounds = [
                members[torch.randperm(len(members), generator=self.generator)] for _ in range(-(-k // len(members)))
            ]
            chosen.append(torch.cat(rounds)[:k])
        if not chosen:
            return iter([])
        picked = torch.cat(chosen)
        return iter(picked[torch.randperm(len(picked), generator=self.generator)].tolist())
