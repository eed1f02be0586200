"""A torch Dataset over a Manifest.

Items are `(uint8 CHW tensor, label)`. Scaling to float and mean/std normalisation happen in the
model (histoflow.models.Preprocess), so a checkpoint carries its normalisation and DataLoader
workers ship 4x fewer bytes than float tensors would need.

Workers do not duplicate large state: paths live in one numpy bytes array (no per-row Python
objects whose refcounts would copy-on-write the whole list into every worker), HDF5 files are
opened lazily inside each worker, and the optional in-memory cache is one contiguous array
shared by fork.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from histoflow.data.images import decode_bytes, read_image, simplejpeg
from histoflow.data.manifest import Manifest
from histoflow.errors import ConfigError, DataError

log = logging.getLogger(__name__)
SIZE_POLICIES = ("resize", "pad", "raise")


def fit_size(img: np.ndarray, image_px: int | None, policy: str, source: str) -> np.ndarray:
    """Bring an HxWx3 image to image_px x image_px (resize, or centre-pad/crop with white)."""
    if image_px is None or img.shape[:2] == (image_px, image_px):
        return img
    if policy == "raise":
        raise DataError(f"{source}: image is {img.shape[1]}x{img.shape[0]}, expected {image_px}x{image_px} (size_policy: raise)")
    if policy == "resize":
        import cv2

        interp = cv2.INTER_AREA if max(img.shape[:2]) > image_px else cv2.INTER_LINEAR
        return cv2.resize(img, (image_px, image_px), interpolation=interp)
    if policy == "pad":
        out = np.full((image_px, image_px, 3), 255, dtype=np.uint8)  # white = glass
        h, w = min(img.shape[0], image_px), min(img.shape[1], image_px)
        top, left = (image_px - h) // 2, (image_px - w) // 2
        sy, sx = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        out[top:top + h, left:left + w] = img[sy:sy + h, sx:sx + w]
        return out
    raise ConfigError(f"size_policy must be one of {SIZE_POLICIES}, got {policy!r}")


class StackedSamples(list):
    """One batch that `PatchDataset.__getitems__` already stacked into a single tensor.

    It is still a list of `(image, label)` samples (views into that tensor), so torch's
    default_collate works on it as on any batch; `histoflow.data.loading.collate` takes the
    stacked tensors as they are instead of copying every image again.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        super().__init__(zip(images, labels.tolist()))
        self.images, self.labels = images, labels


class PatchDataset(Dataset):
    """Patches of a Manifest as `(uint8 CHW tensor, label index)`; label is -1 when unlabelled."""

    def __init__(self, manifest: Manifest, image_px: int | None = None, transform: Callable | None = None,
                 size_policy: str = "resize", non_rgb: str = "convert", cache: str = "none",
                 class_names: list[str] | None = None, crop_px: int | None = None,
                 preprocess: Callable | None = None):
        if size_policy not in SIZE_POLICIES:
            raise ConfigError(f"size_policy must be one of {SIZE_POLICIES}, got {size_policy!r}")
        self.class_names = list(class_names or manifest.class_names)
        unknown = sorted(set(manifest.frame["label"]) - set(self.class_names) - {""})
        if unknown:
            raise DataError(f"{manifest.source}: label(s) {unknown} are not among the classes {self.class_names}")
        index = {name: i for i, name in enumerate(self.class_names)}
        frame = manifest.frame
        self.paths = np.array(frame["path"].tolist(), dtype=np.bytes_)
        self.items = frame["item"].to_numpy(dtype=np.int64)
        self.labels = np.array([index.get(lbl, -1) for lbl in frame["label"]], dtype=np.int64)
        self.image_px = image_px
        if crop_px is not None and image_px is not None and crop_px > image_px:
            raise ConfigError(f"data.crop_px ({crop_px}) must not exceed data.image_px ({image_px})")
        self.crop_px = crop_px
        self.preprocess = preprocess  # stain normalisation / CLAHE, identical at train and predict time
        self.transform = transform
        self.size_policy = size_policy
        self.non_rgb = non_rgb
        self._h5: dict[str, object] = {}
        self._cache: np.ndarray | None = None
        if cache == "memory":
            self._cache = self._preload()
        elif cache != "none":
            raise ConfigError(f"data.cache must be 'none' or 'memory', got {cache!r}")

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return self.paths[i].decode()

    def load(self, i: int, data: bytes | None = None) -> np.ndarray:
        """The decoded, size-fitted HxWx3 uint8 image of row i (no augmentation); `data` is the
        file's bytes when the caller has read them already."""
        if self._cache is not None:
            return self._cache[i]
        path, item = self.path(i), int(self.items[i])
        if item >= 0:
            img = self._read_h5(path, item)
        elif data:
            img = decode_bytes(data, path, self.non_rgb)
        else:
            img = read_image(path, self.non_rgb)
        img = fit_size(img, self.image_px, self.size_policy, path)
        if self.preprocess is not None:
            img = self.preprocess(img)
        if self.crop_px:  # centre crop, e.g. PCam's label lives in the central 32x32 px
            top = (img.shape[0] - self.crop_px) // 2
            left = (img.shape[1] - self.crop_px) // 2
            img = img[top:top + self.crop_px, left:left + self.crop_px]
        return img

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
        for i in range(n):
            self._fill(out[i], i)
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
        return self.image_px is not None and not bool((np.asarray(self.items) >= 0).any())

    def __getitems__(self, indices: list[int]) -> list:
        """A whole batch at once (torch's DataLoader calls this when it exists).

        Images are decoded straight into one (B, H, W, 3) uint8 array, handed on as a
        (B, 3, H, W) channels-last view: no per-sample tensors and no second copy in collate.
        Per-image transforms and unsized images take the per-item path.
        """
        if self.transform is not None or (self.image_px is None and self._cache is None):
            return [self[i] for i in indices]
        rows = np.asarray(indices, dtype=np.int64)
        side = self.crop_px or self.image_px
        images = torch.empty((len(rows), side, side, 3), dtype=torch.uint8)
        if get_worker_info() is not None:
            # filled in place in shared memory: the batch reaches the main process as a file
            # descriptor, with no copy (a private buffer would be copied into shm on the way)
            images.share_memory_()
        pixels = images.numpy()
        if self._cache is not None:
            np.take(self._cache, rows, axis=0, out=pixels)
        else:
            for k, i in enumerate(rows):
                self._fill(pixels[k], int(i))
        images = images.permute(0, 3, 1, 2)
        return StackedSamples(images, torch.from_numpy(self.labels[rows]))

    def _fill(self, out: np.ndarray, i: int) -> None:
        """Write row i's image into `out` (one row of a batch or of the cache), reading its file
        once. Same-size JPEGs (PCam, most patch sets) decode straight into `out`: no intermediate
        array, ~25% faster per image; everything else, and any error, goes through load()."""
        data = self._read_bytes(i) if self.items[i] < 0 else None
        if not (data and self._decode_jpeg_into(out, data)):
            out[...] = self.load(i, data)

    def _read_bytes(self, i: int) -> bytes | None:
        """The file's bytes, or None when it cannot be read (load() then words the error).
        os.open/os.read, not open(): half the time per small file, and two decode threads no
        longer serialise on the io objects' GIL-held set-up (49k vs 138k files/s here)."""
        try:
            fd = os.open(self.paths[i], os.O_RDONLY)
            try:
                return os.read(fd, os.fstat(fd).st_size + 1)
            finally:
                os.close(fd)
        except OSError:
            return None

    def _decode_jpeg_into(self, out: np.ndarray, data: bytes) -> bool:
        """Decode a baseline JPEG of exactly out's size into `out`; False for anything else
        (other sizes or formats, crops, stain normalisation, corrupt data)."""
        if simplejpeg is None or self.preprocess is not None or self.crop_px or data[:2] != b"\xff\xd8":
            return False
        try:
            h, w, colour, _ = simplejpeg.decode_jpeg_header(data)
            if (h, w) != out.shape[:2] or colour not in ("YCbCr", "Gray", "RGB"):
                return False
            simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
            return True
        except ValueError:
            return False

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = {}  # never pickle open HDF5 handles (spawned workers reopen them)
        return state


def dataset_for_checkpoint(manifest: Manifest, meta: dict, labelled: bool = True) -> PatchDataset:
    """A dataset prepared exactly as the checkpoint's training data was (size, crop, colour
    policy); labels are mapped onto the checkpoint's classes, and unknown classes are an error."""
    known = list(meta["class_names"])
    if labelled:
        unknown = sorted(set(manifest.frame["label"]) - set(known) - {""})
        if unknown:
            raise DataError(f"{manifest.source}: class(es) {unknown} are not known to the model (it knows {known})")
    else:
        manifest = Manifest(manifest.frame.assign(label=""), known, manifest.format, manifest.source)
    data_cfg = meta.get("run_config", {}).get("data", {})
    preprocess = None
    if meta.get("preprocess"):  # the fitted stain normaliser travels in the checkpoint
        from histoflow.preprocess.pipeline import Preprocessor

        pre = Preprocessor.from_state(meta["preprocess"])
        preprocess = None if pre.is_identity else pre
    return PatchDataset(manifest, image_px=meta["image_px"], size_policy=data_cfg.get("size_policy", "resize"),
                        non_rgb=data_cfg.get("non_rgb", "convert"), class_names=known, crop_px=data_cfg.get("crop_px"),
                        preprocess=preprocess)
