"""PatchDataset, samplers and augmentation policies on real patches."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from histoflow.config import AugmentConfig, load_config
from histoflow.core.errors import DataError
from histoflow.data.datasets import PatchDataset, fit_size
from histoflow.data.manifest import read_manifest
from histoflow.data.samplers import balanced_sampler, class_weights
from histoflow.data.transforms import RandomDihedral, build_transform, dihedral_views
from tests.conftest import need_data
from tests.helpers import pcam_h5_from_jpegs


def test_idc_dataset_items_and_size_policies():
    m = read_manifest(need_data("idc", "8975"))
    ds = PatchDataset(m, image_px=50)
    x, y = ds[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 50, 50) and y in (0, 1)
    from histoflow.core.images import read_image

    odd = next(i for i in range(len(ds)) if read_image(ds.path(i)).shape[:2] != (50, 50))  # the real edge patch
    assert ds[odd][0].shape == (3, 50, 50)  # resized
    assert PatchDataset(m, image_px=64, size_policy="pad")[odd][0].shape == (3, 64, 64)
    strict = PatchDataset(m, image_px=50, size_policy="raise")
    assert strict[0][0].shape == (3, 50, 50)
    with pytest.raises(DataError, match=r"_class\d\.png: image is \d+x\d+, expected 50x50"):
        strict[odd]


def test_fit_size_pad_keeps_centre():
    img = np.zeros((10, 20, 3), np.uint8)
    out = fit_size(img, 16, "pad", "x")
    assert out.shape == (16, 16, 3) and out[0, 0, 0] == 255 and out[8, 8, 0] == 0


def test_hdf5_dataset_opens_lazily_and_pickles(tmp_path):
    pcam_h5_from_jpegs(need_data("pcam", "valid"), tmp_path, n_per_class=4)
    ds = PatchDataset(read_manifest(tmp_path), image_px=96)
    x, y = ds[5]
    assert x.shape == (3, 96, 96)
    assert ds._h5  # opened on first access
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives
    assert clone._h5 == {}
    assert torch.equal(clone[5][0], x)
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert sum(len(b[1]) for b in batches) == 8


def test_paths_stored_without_per_row_python_objects():
    ds = PatchDataset(read_manifest(need_data("breakhis")), image_px=64)
    assert isinstance(ds.paths, np.ndarray) and ds.paths.dtype.kind == "S"


def test_memory_cache_matches_disk():
    m = read_manifest(need_data("breakhis")).subset(np.arange(8))
    cached = PatchDataset(m, image_px=64, cache="memory")
    plain = PatchDataset(m, image_px=64)
    for i in range(8):
        assert torch.equal(cached[i][0], plain[i][0])


def test_unknown_label_rejected():
    m = read_manifest(need_data("breakhis"))
    with pytest.raises(DataError, match=r"label\(s\) \['malignant'\] are not among the classes \['benign', 'other'\]"):
        PatchDataset(m, class_names=["benign", "other"])


def test_balanced_sampler_and_class_weights():
    labels = np.array([0] * 90 + [1] * 10)
    w = class_weights(labels, 2)
    assert torch.allclose(w, torch.tensor([100 / 90 / 2, 100 / 10 / 2]))
    drawn = labels[list(balanced_sampler(labels, 2, seed=0, num_samples=4000))]
    assert 0.45 < drawn.mean() < 0.55


def test_dihedral_covers_all_views_and_tta_views_are_distinct():
    torch.manual_seed(0)
    img = torch.arange(16, dtype=torch.uint8).reshape(1, 4, 4).expand(3, 4, 4).clone()
    seen = {RandomDihedral()(img).numpy().tobytes() for _ in range(200)}
    assert len(seen) == 8
    views = dihedral_views(img[None])
    assert len({v.numpy().tobytes() for v in views}) == 8


def test_policy_from_yaml_builds_and_runs():
    cfg = load_config(
        None,
        [
            "augment.dihedral=true",
            "augment.colour_jitter={brightness: 0.2, contrast: 0.2, saturation: 0.1, hue: 0.02}",
            "augment.affine={degrees: 15, scale: [0.9, 1.1], shear: 5}",
            "augment.random_resized_crop={scale: [0.7, 1.0]}",
            "augment.gaussian_blur={kernel_px: 3, p: 0.5}",
        ],
    )
    transform = build_transform(cfg.augment, 96)
    assert len(transform.transforms) == 5
    img = torch.randint(0, 256, (3, 96, 96), dtype=torch.uint8)
    out = transform(img)
    assert out.dtype == torch.uint8 and out.shape == (3, 96, 96)
    assert build_transform(AugmentConfig(), 96) is None


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_batched_loading_matches_per_item_and_plain_dataloader(cache):
    from histoflow.data.loading import make_loader

    m = read_manifest(need_data("pcam", "valid")).subset(np.arange(0, 3000, 150))
    ds = PatchDataset(m, image_px=96, cache=cache, crop_px=64)
    reference = torch.stack([ds[i][0] for i in range(len(ds))])
    labels = torch.tensor([ds[i][1] for i in range(len(ds))])
    for workers in (0, 2):
        ours = list(make_loader(ds, 8, workers, persistent=False))
        processes = list(make_loader(ds, 8, workers, persistent=False, threads=False))
        plain = list(DataLoader(ds, batch_size=8, num_workers=workers))  # a user's own loader still works
        for batches in (ours, processes, plain):
            assert torch.equal(torch.cat([b[0] for b in batches]), reference)
            assert torch.equal(torch.cat([b[1] for b in batches]), labels)
    x, _ = ours[0]
    assert x.shape == (8, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)


def test_batched_loading_keeps_per_image_transforms():
    from histoflow.data.loading import make_loader

    m = read_manifest(need_data("breakhis")).subset(np.arange(6))
    ds = PatchDataset(m, image_px=64, transform=build_transform(AugmentConfig(hflip=True), 64))
    x, y = next(iter(make_loader(ds, 6, 0)))
    assert x.shape == (6, 3, 64, 64) and len(y) == 6


def test_thread_workers_keep_order_and_seeded_shuffles(tmp_path):
    from histoflow.data.loading import ThreadLoader, make_loader

    m = read_manifest(need_data("pcam", "valid")).subset(np.arange(0, 3000, 60))
    ds = PatchDataset(m, image_px=96)
    assert ds.decodes_without_gil()
    loader = make_loader(ds, 7, 2)
    assert isinstance(loader, ThreadLoader) and len(loader) == 8  # 50 images in batches of 7
    reference = torch.stack([ds[i][0] for i in range(len(ds))])
    assert torch.equal(torch.cat([x for x, _ in loader]), reference)  # in order, twice
    assert torch.equal(torch.cat([x for x, _ in loader]), reference)
    a = torch.cat([y for _, y in make_loader(ds, 7, 2, shuffle=True, seed=3)])
    b = torch.cat([y for _, y in make_loader(ds, 7, 2, shuffle=True, seed=3)])
    assert torch.equal(a, b) and sorted(a.tolist()) == sorted(torch.tensor(ds.labels).tolist())
    # HDF5 (h5py serialises on one lock) and per-image transforms keep process workers
    h5 = PatchDataset(
        read_manifest(pcam_h5_from_jpegs(need_data("pcam", "valid"), tmp_path, n_per_class=4)), image_px=96
    )
    assert not h5.decodes_without_gil() and not isinstance(make_loader(h5, 4, 2), ThreadLoader)
    flipped = PatchDataset(m, image_px=96, transform=build_transform(AugmentConfig(hflip=True), 96))
    assert not isinstance(make_loader(flipped, 4, 2), ThreadLoader)


def test_jpeg_decoded_in_place_equals_load_and_bad_files_keep_their_errors(tmp_path):
    """The batched path decodes same-size JPEGs straight into the batch; other files take load()."""
    import shutil

    src = sorted(need_data("pcam", "valid", "1").iterdir())[:6]
    folder = tmp_path / "1"
    folder.mkdir()
    for f in src:
        shutil.copy(f, folder / f.name)
    m = read_manifest(tmp_path)
    ds = PatchDataset(m, image_px=96)
    batch = ds.__getitems__(list(range(len(ds)))).images
    assert torch.equal(batch, torch.stack([torch.from_numpy(ds.load(i)).permute(2, 0, 1) for i in range(len(ds))]))
    for side in (64, 128):  # other sizes (too big / too small for the batch): resized by load()
        other = PatchDataset(m, image_px=side)
        batch = other.__getitems__([0, 1])
        assert torch.equal(
            batch.images, torch.stack([torch.from_numpy(other.load(i)).permute(2, 0, 1) for i in (0, 1)])
        )
    (folder / src[2].name).write_bytes((folder / src[2].name).read_bytes()[:300])  # truncated JPEG
    with pytest.raises(DataError, match=src[2].name):
        PatchDataset(m, image_px=96).__getitems__([0, 1, 2])


def test_batch_arrays_are_reused_only_once_released():
    """Thread-worker batches reuse arrays the consumer let go of, and never one it still holds."""
    from histoflow.data.loading import make_loader

    ds = PatchDataset(read_manifest(need_data("pcam", "valid")).subset(np.arange(12)), image_px=96)
    first = ds.__getitems__([0, 1, 2, 3]).images
    kept = first.clone()
    second = ds.__getitems__([4, 5, 6, 7]).images  # `first` is held: a new array
    assert first.data_ptr() != second.data_ptr()
    assert torch.equal(first, kept)  # and the held batch is untouched
    pointer = first.data_ptr()
    del first
    third = ds.__getitems__([8, 9, 10, 11]).images
    assert third.data_ptr() == pointer  # released: its array is used again
    assert torch.equal(third, torch.stack([torch.from_numpy(ds.load(i)).permute(2, 0, 1) for i in (8, 9, 10, 11)]))
    held = list(make_loader(ds, 4, 2, threads=True))  # a consumer that keeps every batch
    assert len({x.data_ptr() for x, _ in held}) == 3
    assert torch.equal(torch.cat([x for x, _ in held]), ds.__getitems__(list(range(12))).images)


def test_read_file_reads_big_files_whole(tmp_path):
    from histoflow.core.images import FIRST_READ, read_file

    for size in (0, 10, FIRST_READ - 1, FIRST_READ, FIRST_READ + 1, 3 * FIRST_READ + 7):
        path = tmp_path / f"f{size}"
        data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
        path.write_bytes(data)
        assert read_file(path) == data
    with pytest.raises(FileNotFoundError):
        read_file(tmp_path / "missing")


def test_files_read_in_chunks_land_in_their_rows(monkeypatch):
    """_fill_rows reads a chunk of files, then decodes it; rows must not shift across chunks."""
    import histoflow.data.datasets as datasets

    monkeypatch.setattr(datasets, "READ_AHEAD", 3)
    m = read_manifest(need_data("pcam", "valid")).subset(np.arange(0, 1500, 150))
    ds = PatchDataset(m, image_px=96)
    order = [7, 2, 9, 0, 5, 3, 8, 1]
    expected = torch.stack([torch.from_numpy(ds.load(i)).permute(2, 0, 1) for i in order])
    assert torch.equal(ds.__getitems__(order).images, expected)
    cached = PatchDataset(m, image_px=96, cache="memory")
    assert torch.equal(cached.__getitems__(order).images, expected)
