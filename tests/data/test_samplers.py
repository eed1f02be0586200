"""SlideEpochSampler on the tiles of real slides (PCam cohort, tiled once per module): per-slide
caps every epoch, fresh subsets that cover a slide over epochs, class balance over slides,
determinism, and a generator that --resume saves and restores."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from histoflow.data.datasets import PatchDataset
from histoflow.data.loading import make_loader
from histoflow.data.samplers import SlideEpochSampler
from histoflow.data.tiles import read_tile_cohort
from histoflow.train.resume import _rng_state, _set_rng_state, loader_generators
from tests.helpers import tiled_pcam_cohort


@pytest.fixture(scope="module")
def train_manifest(tmp_path_factory):
    cohort, tiles = tiled_pcam_cohort(tmp_path_factory.mktemp("sampler"))
    return read_tile_cohort(tiles, cohort / "labels.csv").manifest.split("train")


@pytest.fixture(scope="module")
def train_tiles(train_manifest):
    """(slide of each training tile, label index of each): 6 slides, 2 of class 0 and 4 of class 1."""
    manifest = train_manifest
    labels = np.array([manifest.class_names.index(v) for v in manifest.frame["label"]])
    slides = manifest.frame["slide"].to_numpy()
    per_class = {c: len(set(slides[labels == c])) for c in (0, 1)}
    assert per_class == {0: 2, 1: 4}
    return slides, labels


def _epochs(sampler, n):
    return [list(sampler) for _ in range(n)]


def test_per_slide_cap_every_epoch_without_repeats(train_tiles):
    slides, labels = train_tiles
    sizes = Counter(slides)
    cap = 5
    sampler = SlideEpochSampler(slides, labels, per_slide=cap, seed=0)
    assert len(sampler) == cap * len(sizes) < len(slides)
    for epoch in _epochs(sampler, 6):
        assert len(epoch) == len(set(epoch)) == len(sampler)
        assert Counter(slides[epoch]) == {s: cap for s in sizes}
    # no cap: every tile once per epoch
    whole = SlideEpochSampler(slides, labels, seed=0)
    assert sorted(next(iter(_epochs(whole, 1)))) == list(range(len(slides)))
    # a cap above a slide's size takes the slide whole, no tile twice
    big = SlideEpochSampler(slides, labels, per_slide=max(sizes.values()) - 2, seed=0)
    epoch = list(big)
    assert Counter(slides[epoch]) == {s: min(n, max(sizes.values()) - 2) for s, n in sizes.items()}
    assert len(set(epoch)) == len(epoch)


def test_fresh_subsets_cover_every_slide_over_epochs(train_tiles):
    slides, labels = train_tiles
    sampler = SlideEpochSampler(slides, labels, per_slide=4, seed=1)
    epochs = _epochs(sampler, 40)
    assert len({tuple(sorted(e)) for e in epochs}) == 40  # a new subset each epoch
    largest = Counter(slides).most_common(1)[0][0]
    seen = {i for e in epochs for i in e if slides[i] == largest}
    assert seen == set(np.flatnonzero(slides == largest).tolist())  # all 20+ tiles, 4 at a time
    assert {i for e in epochs for i in e} == set(range(len(slides)))


def test_class_balance_over_slides(train_tiles):
    """Class 1 has twice the slides (and tiles) of class 0: balanced draws give each class half,
    and the slides within a class equal shares whatever their size."""
    slides, labels = train_tiles
    tiles_per_class = np.bincount(labels)
    assert tiles_per_class[1] > 1.5 * tiles_per_class[0]
    sampler = SlideEpochSampler(slides, labels, per_slide=6, balance_classes=True, seed=0)
    drawn = np.concatenate(_epochs(sampler, 50))
    assert len(drawn) == 50 * len(sampler)
    share = np.bincount(labels[drawn]) / len(drawn)
    assert share == pytest.approx([0.5, 0.5], abs=0.03)
    per_slide = Counter(slides[drawn])
    for c in (0, 1):
        counts = np.array([per_slide[s] for s in set(slides[labels == c])])
        assert counts.max() / counts.min() < 1.2, (c, counts)
    unbalanced = np.concatenate(_epochs(SlideEpochSampler(slides, labels, per_slide=6, seed=0), 5))
    assert np.bincount(labels[unbalanced])[1] == 2 * np.bincount(labels[unbalanced])[0]  # 4 vs 2 slides x 6


def test_same_seed_same_draws(train_tiles):
    slides, labels = train_tiles
    for balance in (False, True):
        a = _epochs(SlideEpochSampler(slides, labels, 5, balance, seed=7), 3)
        b = _epochs(SlideEpochSampler(slides, labels, 5, balance, seed=7), 3)
        c = _epochs(SlideEpochSampler(slides, labels, 5, balance, seed=8), 3)
        assert a == b and a != c and a[0] != a[1]


@pytest.mark.parametrize("threads", [True, False])
def test_resume_restores_the_sampler_generator(train_tiles, threads):
    """--resume saves the states of `loader_generators(train_loader)` at an epoch's start and sets
    them back: the resumed loader then draws that epoch exactly as the first run did."""
    slides, labels = train_tiles

    class Rows:  # the loader only needs rows here, not pixels
        def __len__(self):
            return len(slides)

        def __getitems__(self, rows):
            return [(r, int(labels[r])) for r in rows]

    def loader():
        sampler = SlideEpochSampler(slides, labels, 5, balance_classes=True, seed=0)
        return sampler, make_loader(Rows(), 8, 1, sampler=sampler, persistent=False, threads=threads)

    sampler, first = loader()
    assert any(g is sampler.generator for g in loader_generators(first))
    order = lambda lo: [int(i) for x, _ in lo for i in x]  # noqa: E731
    order(first)  # epoch 0
    saved = _rng_state(loader_generators(first))
    epoch1 = order(first)
    sampler2, second = loader()
    assert order(second) != epoch1  # a fresh loader would draw epoch 0 again
    _set_rng_state(saved, loader_generators(second))
    assert order(second) == epoch1


def test_sampler_works_on_a_tile_dataset(train_manifest):
    """Indices index the dataset built from the same manifest rows: its batches hold the drawn slides."""
    manifest = train_manifest
    ds = PatchDataset(manifest, image_px=32)
    slides = manifest.frame["slide"].to_numpy()
    sampler = SlideEpochSampler(slides, ds.labels, per_slide=3, seed=0)
    seen = 0
    for x, y in make_loader(ds, 7, 2, sampler=sampler, threads=True):
        assert x.shape[1:] == (3, 32, 32)
        seen += len(y)
    assert seen == 3 * len(set(slides))
