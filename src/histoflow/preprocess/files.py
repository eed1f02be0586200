"""Stain-normalise image files to a target: the library behind `histoflow normalize`.

Images of one size are normalised in batches; each output is written atomically (temporary
name, then rename), and the fitted state goes to `normalizer.json` beside them so the same
normalisation can be put in a config or checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from histoflow.core.io import atomic_path, atomic_write_json
from histoflow.core.progress import progress_bar

log = logging.getLogger(__name__)
PANEL_IMAGES = 6  # sources shown before and after


def _source_files(sources: list[Path]) -> list[Path]:
    from histoflow.core.errors import DataError
    from histoflow.core.images import is_image_file

    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            files.extend(sorted(p for p in src.rglob("*") if p.is_file() and is_image_file(p)))
        elif src.is_file():
            files.append(src)
        else:
            raise DataError(f"{src}: not found")
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, sources))}")
    return files


def _write_image(array, path: Path) -> None:
    from PIL import Image

    # JPEG sources stay JPEG (same names), at a quality that does not undo the normalisation
    options: dict[str, Any] = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, **options)


def normalize_files(
    sources: list[Path],
    out: Path,
    target: Optional[Path],
    method: str = "macenko",
    clahe_clip: Optional[float] = None,
    clahe_grid: int = 8,
    batch_size: int = 32,
    quiet: bool = False,
    io: float | str = 240.0,
    panel: Optional[Path] = None,
) -> dict:
    """Normalise every image under `sources` into `out` (same file names); returns a summary.

    Also writes a before/after picture of a few images to `panel` (default: beside `out`,
    `<out>_before_after.png`)."""
    from histoflow.core.errors import ConfigError
    from histoflow.core.images import read_image
    from histoflow.preprocess.pipeline import build_preprocessor

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if method == "reinhard" and target is None:
        raise ConfigError("--target is required with --method reinhard (it matches the target's LAB statistics)")
    cfg: dict[str, Any] = {"stain_norm": method, "target": str(target) if target else None}
    if method == "macenko":
        try:
            cfg["io"] = io if io == "auto" else float(io)
        except ValueError:
            raise ConfigError(
                f"--io must be a number (glass brightness, e.g. 240 or 215) or auto, got {io!r}"
            ) from None
    if clahe_clip is not None:
        cfg["clahe"] = {"clip_limit": clahe_clip, "grid": clahe_grid}
    pre = build_preprocessor(cfg)
    files = _source_files(sources)
    if any(f.resolve().parent == out.resolve() for f in files):
        raise ConfigError(f"--out {out} holds source images: choose another folder (sources are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in files]
    if len(set(names)) != len(names):  # two sources with the same name would overwrite each other
        dup = sorted({n for n in names if names.count(n) > 1})[:3]
        raise ConfigError(f"output names collide in {out}: {', '.join(dup)} (normalise those folders separately)")
    fell_back: list[str] = []  # files whose own stain statistics could not be used: named, not only counted
    shown = set(np.linspace(0, len(files) - 1, min(PANEL_IMAGES, len(files))).round().astype(int).tolist())
    examples: list[tuple[str, np.ndarray, np.ndarray, bool]] = []  # (name, before, after, fell back)
    with progress_bar(len(files), "normalising", quiet=quiet) as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            images = [read_image(f) for f in chunk]
            by_size: dict[tuple, list[int]] = {}
            for i, img in enumerate(images):
                by_size.setdefault(img.shape, []).append(i)
            for idx in by_size.values():  # one batched call per image size
                done = pre.batch(np.stack([images[i] for i in idx]))
                flags = pre.normalizer.last_fallbacks if pre.normalizer is not None else []
                fell_back += [str(chunk[i]) for i, flag in zip(idx, flags) if flag]
                for j, (i, arr) in enumerate(zip(idx, done)):
                    _write_image(arr, out / chunk[i].name)
                    if start + i in shown:
                        examples.append((chunk[i].name, images[i], arr, bool(flags[j]) if j < len(flags) else False))
            bar.advance(len(chunk))
    state_path = out / "normalizer.json"
    atomic_write_json(state_path, pre.state_dict())
    panel = panel or default_panel(out)
    examples.sort(key=lambda e: names.index(e[0]))
    before_after_panel(examples, panel, method, target, len(files), len(fell_back))
    return {
        "images": len(files),
        "out": str(out),
        "fallbacks": pre.fallbacks,
        "fallback_files": fell_back,
        "state": str(state_path),
        "panel": str(panel),
    }


def default_panel(out: Path) -> Path:
    """Beside the output folder, not in it: a picture among the normalised images would be read
    as one more image by whatever reads the folder next."""
    out = Path(out).resolve()
    return out.with_name(f"{out.name}_before_after.png")


def before_after_panel(
    examples: list[tuple[str, np.ndarray, np.ndarray, bool]],
    path: Path,
    method: str,
    target: Optional[Path],
    n_images: int,
    n_fallbacks: int,
) -> Path:
    """Some sources (evenly spread over the file list) before and after, and the target's first
    image when there is one; images that fell back to the reference are marked."""
    from histoflow.core.io import atomic_path
    from histoflow.preprocess.pipeline import target_images

    target_img = target_images(target)[0][0] if target is not None else None
    cols = len(examples) + (target_img is not None)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, cols, figsize=(1.9 * cols + 0.6, 4.6), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for c, (name, before, after, fell) in enumerate(examples):
        axes[0, c].imshow(before)
        axes[1, c].imshow(after)
        axes[0, c].set_title(_short(name), fontsize=8)
        if fell:
            why = "left unchanged" if method == "reinhard" else "reference matrix used"
            axes[1, c].set_title(why, fontsize=7.5, color="firebrick")
    axes[0, 0].set_ylabel("before", fontsize=10)
    axes[1, 0].set_ylabel("after", fontsize=10)
    if target is not None and target_img is not None:
        axes[0, -1].imshow(target_img)
        axes[0, -1].set_title(f"target: {_short(Path(target).name)}", fontsize=8)
        axes[1, -1].set_axis_off()
    what = "Macenko" if method == "macenko" else method.capitalize()
    to = f" to {Path(target).name}" if target is not None else " to Macenko's reference H&E"
    fig.suptitle(
        f"{what} stain normalisation{to}: {len(examples)} of {n_images} images shown, {n_fallbacks} fell back",
        fontsize=10,
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def _short(name: str) -> str:
    return name if len(name) <= 22 else f"{name[:9]}...{name[-10:]}"
