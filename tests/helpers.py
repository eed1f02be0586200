"""Small builders of real-format test files (images, HDF5, CSV) used across tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# A run small enough for a unit test: 32 px patches, an 8-16 CNN, no worker processes.
TINY_RUN = [
    "data.max_per_split=48",
    "data.image_px=32",
    "model.params={widths: [8, 16], depth: 1}",
    "train.epochs=2",
    "train.batch_size=16",
    "data.num_workers=0",
    "normalize.kind=imagenet",
    "train.optimizer.lr=0.01",
]
# The CLI's smallest run: one epoch of two steps.
TINY_CLI_RUN = [
    "data.image_px=32",
    "data.num_workers=0",
    "model.params={widths: [8, 16], depth: 1}",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.batch_size=8",
    "normalize.kind=imagenet",
    "train.scheduler.name=cosine",
]


def tiny_config(*extra: str, data=None, base=TINY_RUN):
    """A RunConfig for TINY_RUN on the real PCam patches (skips when they are absent)."""
    from histoflow.config import load_config
    from tests.conftest import need_data

    return load_config(None, [f"data.path={data or need_data('pcam')}", *base, *extra])


def sets(*overrides: str) -> list[str]:
    """`--set` arguments for each override."""
    return [arg for o in overrides for arg in ("--set", o)]


def write_png(path: Path, size=(32, 32), mode="RGB", value=None, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = (
        rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        if value is None
        else np.full((size[1], size[0], channels), value, np.uint8)
    )
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    img.save(path)
    return path


def write_jpeg(path: Path, size=(32, 32), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)
    return path


def class_folder_dataset(root: Path, n_per_class=6, classes=("0", "1"), size=(32, 32)) -> Path:
    for c, name in enumerate(classes):
        for i in range(n_per_class):
            write_png(root / name / f"{name}_{i}.png", size=size, value=40 + 150 * c + i)
    return root


def pcam_h5_from_jpegs(jpeg_root: Path, out_dir: Path, n_per_class: int = 8, split: str = "valid") -> Path:
    """Re-pack real PCam JPEGs into the official HDF5 layout (x: N,96,96,3 uint8; y: N,1,1,1)."""
    import h5py

    images, labels = [], []
    for label in ("0", "1"):
        for path in sorted((jpeg_root / label).glob("*.jpg"))[:n_per_class]:
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(int(label))
    out_dir.mkdir(parents=True, exist_ok=True)
    with h5py.File(out_dir / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
        f.create_dataset("x", data=np.stack(images), compression="gzip")
    with h5py.File(out_dir / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
        f.create_dataset("y", data=np.array(labels, dtype=np.uint8).reshape(-1, 1, 1, 1))
    return out_dir


def cohort_script():
    """scripts/make_pcam_cohort.py as a module (scripts/ is not a package)."""
    import importlib.util
    import sys

    name = "make_pcam_cohort"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


COHORT_MPP = 0.972  # make_pcam_cohort's slides, PCam's resolution
COHORT_TILE_PX = 96


def tiled_pcam_cohort(
    root: Path, n_train: int = 6, n_val: int = 2, n_test: int = 2, grid: int = 8, seed: int = 0
) -> tuple[Path, Path]:
    """A small cohort of pyramidal TIFF slides built from the real PCam patches (skips when they
    are absent), tiled at 96 px / 0.972 um/px so the tile grid falls on the patches: returns
    (cohort folder with slides/, labels.csv, regions.csv, cells/; tiling output folder)."""
    from histoflow.tiling import extract_tiles
    from tests.conftest import need_data

    pcam = need_data("pcam")
    cohort = root / "cohort"
    cohort_script().build_cohort(
        pcam, cohort, n_train=n_train, n_val=n_val, n_test=n_test, grid=grid, seed=seed, min_slides=0, quiet=True
    )
    tiles = root / "tiles"
    extract_tiles(sorted((cohort / "slides").glob("*.tif")), tiles, tile_config(), workers=1, progress=False)
    return cohort, tiles


def tile_config(**changes):
    from histoflow.tiling import TileConfig

    return TileConfig(**{"tile_px": COHORT_TILE_PX, "mpp": COHORT_MPP, "tissue_threshold": 0.2, **changes})


def build_pcam_cohort(out: Path, **options) -> Path:
    """A small whole-slide cohort from the real PCam patches (scripts/make_pcam_cohort.py), or a
    skip when they are absent. `options`: build_cohort's (n_train, n_val, n_test, grid, seed)."""
    from tests.conftest import need_data

    cohort_script().build_cohort(need_data("pcam"), out, **{"min_slides": 0, "quiet": True, **options})
    return out
