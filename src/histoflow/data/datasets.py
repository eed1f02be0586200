"""A torch Dataset over a Manifest.

Items are `(uint8 CHW tensor, label)`. Scaling to float and mean/std normalisation happen in the
model (histoflow.models.Preprocess), so a checkpoint carries its normalisation and DataLoader
workers ship 4x fewer bytes than float tensors would need.

Workers do not duplicate large state: paths live in one numpy bytes array (no per-row Python
objects whose refcounts would copy-on-write the whole list into every worker), encoded with
`os.fsencode` and decoded with `os.fsdecode` so any path the file system holds (accents, CJK,
even undecodable bytes) survives the round trip, HDF5 files are
opened lazily inside each worker, and the optional in-memory cache is one contiguous array
shared by fork.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, cast, overload

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from histoflow.core.errors import ConfigError, DataError
from histoflow.core.images import decode_bytes, decode_jpeg_into, read_file, read_image
from histoflow.data.manifest import Manifest
from histoflow.data.shard_rows import ShardRows

log = logging.getLogger(__name__)
SIZE_POLICIES = ("resize", "pad", "raise")


def fit_size(img: np.ndarray, image_px: int | None, policy: str, source: str) -> np.ndarray:
    """Bring an HxWx3 image to image_px x image_px (resize, or centre-pad/crop with white)."""
    if image_px is None or img.shape[:2] == (image_px, image_px):
        return img
    if policy == "raise":
        raise DataError(
            f"{source}: image is {img.shape[1]}x{img.shape[0]}, expected {image_px}x{image_px} (size_policy: raise)"
        )
    if policy == "resize":
        import cv2

        interp = cv2.INTER_AREA if max(img.shape[:2]) > image_px else cv2.INTER_LINEAR
        return cv2.resize(img, (image_px, image_px), interpolation=interp)
    if policy == "pad":
        out = np.full((image_px, image_px, 3), 255, dtype=np.uint8)  # white = glass
        h, w = min(img.shape[0], image_px), min(img.shape[1], image_px)
        top, left = (image_px - h) // 2, (image_px - w) // 2
        sy, sx = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        out[top : top + h, left : left + w] = img[sy : sy + h, sx : sx + w]
        return out
    raise ConfigError(f"size_policy must be one of {SIZE_POLICIES}, got {policy!r}")


def prepare_image(
    img: np.ndarray,
    image_px: int | None,
    size_policy: str = "resize",
    preprocess: Callable | None = None,
    crop_px: int | None = None,
    source: str = "image",
) -> np.ndarray:
    """An HxWx3 uint8 image as a model sees it: sized, colour-preprocessed, centre-cropped (the
    order training used; `PatchDataset.load` and in-memory prediction both come here)."""
    img = fit_size(img, image_px, size_policy, source)
    if preprocess is not None:
        img = preprocess(img)
    if crop_px:  # centre crop, e.g. PCam's label lives in the central 32x32 px
        top = (img.shape[0] - crop_px) // 2
        left = (img.shape[1] - crop_px) // 2
        img = img[top : top + crop_px, left : left + crop_px]
    return img


READ_AHEAD = 256  # rows whose files PatchDataset._fill_rows reads before decoding them


def _read_or_none(path: bytes) -> bytes | None:
    try:
        return read_file(path)
    except OSError:
        return None  # load() then reads again and words the error (missing, unreadable)


class StackedSamples(Sequence):
    """One batch that `PatchDataset.__getitems__` already stacked into a single tensor.

    It is still a sequence of `(image, label)` samples, so torch's default_collate works on it as
    on any batch, but those per-sample views are made only when asked for:
    `histoflow.data.loading.collate` takes the stacked tensors as they are, and making 256 views
    per batch is GIL-held work the decode threads would wait on.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    @overload
    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]: ...

    @overload
    def __getitem__(self, k: slice) -> NoReturn: ...  # no slices: the bounds check raises TypeError

    def __getitem__(self, k):
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        return self.images[k], int(self.labels[k])


class ReusedBatchArrays:
    """Batch arrays that are handed out again once nobody holds them any more.

    A fresh batch array is new memory: the kernel faults in and zeroes its pages on every batch,
    a measurable share of the decode time (bench/bench_data.py). Whether an array handed out earlier is
    still in use is read off its reference count: the batch tensor, and every view of it, holds a
    reference to the array, so the count falls back to the pool's own once the consumer lets go.
    Arrays a consumer keeps (e.g. `list(loader)`) are never written again; the pool then makes
    new ones. Thread workers share one pool; process workers use shared memory instead.
    """

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            for arr in self._arrays:
                # references: the list, `arr`, getrefcount's argument. Not enumerate(): its
                # reused result tuple would hold one more.
                if arr.shape == shape and sys.getrefcount(arr) == 3:
                    return arr
            # numpy asks the kernel for huge pages on big arrays (torch.empty does not): fewer
            # page faults for the arrays that are new
            arr = np.empty(shape, dtype=np.uint8)
            if len(self._arrays) >= self.keep:
                self._arrays.pop(0)  # all in use or of another shape: let the oldest go
            self._arrays.append(arr)
            return arr

    def __reduce__(self):  # a process worker gets an empty pool of its own (and no lock)
        return ReusedBatchArrays, (self.keep,)


class PatchDataset(Dataset):
    """Patches of a Manifest as `(uint8 CHW tensor, label index)`; label is -1 when unlabelled."""

    def __init__(
        self,
        manifest: Manifest,
        image_px: int | None = None,
        transform: Callable | None = None,
        size_policy: str = "resize",
        non_rgb: str = "convert",
        cache: str = "none",
        class_names: list[str] | None = None,
        crop_px: int | None = None,
        preprocess: Callable | None = None,
    ):
        if size_policy not in SIZE_POLICIES:
            raise ConfigError(f"size_policy must be one of {SIZE_POLICIES}, got {size_policy!r}")
        self.class_names = list(class_names or manifest.class_names)
        unknown = sorted(set(manifest.frame["label"]) - set(self.class_names) - {""})
        if unknown:
            raise DataError(f"{manifest.source}: label(s) {unknown} are not among the classes {self.class_names}")
        index = {name: i for i, name in enumerate(self.class_names)}
        frame = manifest.frame
        # os.fsencode, not numpy's ASCII str->bytes cast, which fails on 'Dätä/pätient é/...'
        self.paths = np.array([os.fsencode(p) for p in frame["path"].tolist()], dtype=np.bytes_)
        self.items = frame["item"].to_numpy(dtype=np.int64)
        # rows that are items of a container file: a tile shard (Parquet) or an HDF5 file
        self._in_shard = (self.items >= 0) & np.array([p.endswith(b".parquet") for p in self.paths], dtype=bool)
        self._has_h5 = bool(((self.items >= 0) & ~self._in_shard).any())
        self._shards = ShardRows()
        self.labels = np.array([index.get(lbl, -1) for lbl in frame["label"]], dtype=np.int64)
        self.image_px = image_px
        if crop_px is not None and image_px is not None and crop_px > image_px:
            raise ConfigError(f"data.crop_px ({crop_px}) must not exceed data.image_px ({image_px})")
        self.crop_px = crop_px
        self.preprocess = preprocess  # stain normalisation / CLAHE, identical at train and predict time
        self.transform = transform
        self.size_policy = size_policy
        self.non_rgb = non_rgb
        self._h5: dict[str, Any] = {}  # h5py datasets (h5py ships no type hints)
        self._batch_arrays = ReusedBatchArrays()
        self._cache: np.ndarray | None = None
        if cache == "memory":
            self._cache = self._preload()
        elif cache != "none":
            raise ConfigError(f"data.cache must be 'none' or 'memory', got {cache!r}")

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return os.fsdecode(self.paths[i])

    def load(self, i: int, data: bytes | None = None) -> np.ndarray:
        """The decoded, size-fitted HxWx3 uint8 image of row i (no augmentation); `data` is the
        file's bytes when the caller has read them already."""
        if self._cache is not None:
            return self._cache[i]
        path, item = self.path(i), int(self.items[i])
        if item >= 0 and self._in_shard[i]:
            where = f"{path} row {item}"
            img = decode_bytes(data or self._shards.row_bytes(path, item), where, self.non_rgb)
            path = where
        elif item >= 0:
            img = self._read_h5(path, item)
        elif data:
            img = decode_bytes(data, path, self.non_rgb)
        else:
            img = read_image(path, self.non_rgb)
        return prepare_image(img, self.image_px, self.size_policy, self.preprocess, self.crop_px, path)

    def _read_h5(self, path: str, item: int) -> np.ndarray:
        handle = self._h5.get(path)
        if handle is None:  # opened here, inside the worker: h5py handles must not cross fork
            import h5py

            handle = self._h5[path] = h5py.File(path, "r")["x"]
        return np.asarray(handle[item])

    def _preload(self) -> np.ndarray:
        if self.image_px is None:
            raise ConfigError("data.cache: memory needs data.image_px (images are stored at one size)")
        n = len(self)
        side = self.crop_px or self.image_px
        out = np.empty((n, side, side, 3), dtype=np.uint8)
        log.info("caching %d images in memory (%.0f MB)", n, out.nbytes / 1e6)
        self._fill_rows(out, range(n))
        return out

    def __getitem__(self, i: int):
        img = torch.from_numpy(np.ascontiguousarray(self.load(i))).permute(2, 0, 1)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])

    def decodes_without_gil(self) -> bool:
        """Whether a batch decodes in GIL-free code (file reads, libjpeg-turbo/PIL, numpy), so
        thread workers scale: the batched path over image files, not HDF5 (h5py serialises
        every call on one lock) nor per-image Python transforms."""
        if self.transform is not None or self.preprocess is not None:
            return False
        if self._cache is not None:
            return True
        return self.image_px is not None and not self._has_h5

    def __getitems__(self, indices: list[int]) -> list | StackedSamples:
        """A whole batch at once (torch's DataLoader calls this when it exists).

        Images are decoded straight into one (B, H, W, 3) uint8 array, handed on as a
        (B, 3, H, W) channels-last view: no per-sample tensors and no second copy in collate.
        Per-image transforms and unsized images take the per-item path.
        """
        if self.transform is not None or (self.image_px is None and self._cache is None):
            return [self[i] for i in indices]
        rows = [int(i) for i in indices]
        side = cast(int, self.crop_px or self.image_px)  # sized: image_px is set (the cache needs it too)
        if get_worker_info() is not None:
            # filled in place in shared memory: the batch reaches the main process as a file
            # descriptor, with no copy (a private buffer would be copied into shm on the way)
            images = torch.empty((len(rows), side, side, 3), dtype=torch.uint8).share_memory_()
            pixels = images.numpy()
        else:
            pixels = self._batch_arrays.get((len(rows), side, side, 3))
            images = torch.from_numpy(pixels)
        if self._cache is not None:
            np.take(self._cache, rows, axis=0, out=pixels)
        else:
            self._fill_rows(pixels, rows)
        return StackedSamples(images.permute(0, 3, 1, 2), torch.from_numpy(self.labels[rows]))

    def _fill_rows(self, pixels: np.ndarray, rows) -> None:
        """Write the images of `rows` into pixels[0], pixels[1], ... (a batch or the cache),
        reading each file once.

        Same-size JPEGs (PCam, most patch sets) decode straight into the batch: no intermediate
        array. Everything else, and every error, goes through load() with the bytes already read.
        This is the hot path of every epoch and is kept flat on purpose (no per-image method
        calls or numpy scalars): each Python step holds the GIL the other decode thread waits on.
        Files are read a chunk at a time, then decoded: interleaving each file's open/read/close
        with its decode handed the GIL between two decode threads at every call, and in two
        phases one thread's file calls mostly run while the other decodes (more images/s from
        two threads; bench/bench_data.py has the fill loop's rows).
        """
        in_place = self.preprocess is None and not self.crop_px
        paths, items, in_shard = self.paths, self.items, self._in_shard
        rows = list(rows)
        for start in range(0, len(rows), READ_AHEAD):
            chunk = rows[start : start + READ_AHEAD]
            # HDF5 rows have no file of their own: load() reads them (data None); shard rows are
            # read together, each tile by its byte range in the shard (histoflow.data.shard_rows)
            files: list[bytes | None] = [None if items[i] >= 0 else _read_or_none(paths[i]) for i in chunk]
            tiles = [k for k, i in enumerate(chunk) if in_shard[i]]
            if tiles:
                found = self._shards.rows_bytes([(os.fsdecode(paths[chunk[k]]), int(items[chunk[k]])) for k in tiles])
                for k, tile_bytes in zip(tiles, found):
                    files[k] = tile_bytes
            for k, i, data in zip(range(start, start + len(chunk)), chunk, files):
                if not (in_place and data and decode_jpeg_into(pixels[k], data)):
                    pixels[k] = self.load(i, data)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = {}  # never pickle open HDF5 handles (spawned workers reopen them)
        return state


def dataset_for_checkpoint(
    manifest: Manifest, ckpt, labelled: bool = True, size_policy: str | None = None
) -> PatchDataset:
    """A dataset prepared exactly as the checkpoint's training data was (size, crop, colour
    policy); labels are mapped onto the checkpoint's classes, and unknown classes are an error.

    `size_policy` "resize" or "pad" overrides how images are brought to the model's size;
    "raise" (refuse data of another size) is checked by `histoflow.data.sizes.size_notes`
    against the training images' size, so here it keeps the training policy."""
    known = ckpt.class_names
    if labelled:
        unknown = sorted(set(manifest.frame["label"]) - set(known) - {""})
        if unknown:
            raise DataError(f"{manifest.source}: class(es) {unknown} are not known to the model (it knows {known})")
    else:
        manifest = Manifest(manifest.frame.assign(label=""), known, manifest.format, manifest.source)
    return PatchDataset(manifest, class_names=known, **checkpoint_preparation(ckpt, size_policy))


def checkpoint_preparation(ckpt, size_policy: str | None = None) -> dict[str, Any]:
    """How the checkpoint's training images were prepared: image_px, size_policy, non_rgb,
    crop_px and the fitted colour preprocessor (the stain normaliser travels in the checkpoint)."""
    data_cfg = ckpt.data_config
    preprocess = None
    if ckpt.preprocess:
        from histoflow.preprocess.pipeline import Preprocessor

        pre = Preprocessor.from_state(ckpt.preprocess)
        preprocess = None if pre.is_identity else pre
    return {
        "image_px": ckpt.image_px,
        "size_policy": size_policy if size_policy in ("resize", "pad") else data_cfg.get("size_policy", "resize"),
        "non_rgb": data_cfg.get("non_rgb", "convert"),
        "crop_px": data_cfg.get("crop_px"),
        "preprocess": preprocess,
    }
