"""From a run config to train/val/test datasets: read, verify, split, subsample, normalise."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histoflow.config import RunConfig
from histoflow.core.errors import DataError
from histoflow.core.paths import expand
from histoflow.data.datasets import PatchDataset
from histoflow.data.manifest import Manifest, read_manifest
from histoflow.data.samplers import SlideEpochSampler, balanced_sampler
from histoflow.data.splits import split_manifest
from histoflow.data.summary import channel_stats
from histoflow.data.tiles import TileCohort, read_tile_cohort
from histoflow.data.transforms import build_transform
from histoflow.data.verify import verify_manifest
from histoflow.models.classifier import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


@dataclass
class RunData:
    manifest: Manifest  # all rows, `split` filled in
    class_names: list[str]
    train: PatchDataset
    val: PatchDataset | None
    test: PatchDataset | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    preprocess_state: dict | None = None  # fitted stain normaliser / CLAHE, stored in checkpoints
    # data.* values the data decided (tiles: image_px and mpp from the shards): fit records them
    # in config.yaml and the checkpoint
    resolved: dict = field(default_factory=dict)
    cohort: TileCohort | None = None  # whole-slide data: the slides and what was left out


def load_manifest(cfg: RunConfig, verify: bool | None = None) -> Manifest:
    d = cfg.data
    options = {"label_column": d.label_column}
    if d.label_pattern:
        options["label_pattern"] = d.label_pattern
    # binary: positive class second (the model's one logit), or a ConfigError asking for data.positive_class
    manifest = read_manifest(d.path, format=d.format, **options).with_positive_class(d.positive_class)
    if d.verify if verify is None else verify:
        manifest = verify_manifest(manifest, on_error=d.on_error, non_rgb=d.non_rgb, size_policy=d.size_policy)
        if manifest.skipped:
            log.warning(
                "%d bad image(s) skipped (on_error: skip); first: %s", len(manifest.skipped), manifest.skipped[0][1]
            )
    return manifest


def assign_splits(manifest: Manifest, cfg: RunConfig) -> Manifest:
    """Keep the data's own train/val(/test) split when it has one; otherwise make one."""
    manifest.require_classes(2)
    have = set(manifest.splits)
    if {"train", "val"} <= have:
        return manifest
    if have:
        log.warning("data has splits %s but no train+val pair: making a new split", sorted(have))
    s = cfg.data.split
    return split_manifest(manifest, s.val_fraction, s.test_fraction, s.group_by, cfg.seed)


def subsample(manifest: Manifest, max_per_split: int | None, seed: int) -> Manifest:
    """At most `max_per_split` rows per split, stratified by label, seeded."""
    if not max_per_split:
        return manifest
    rng = np.random.default_rng(seed)
    keep = []
    for _, rows in manifest.frame.groupby("split"):
        if len(rows) <= max_per_split:
            keep.extend(rows.index)
            continue
        for _, cls_rows in rows.groupby("label"):
            k = max(1, round(max_per_split * len(cls_rows) / len(rows)))
            keep.extend(rng.choice(cls_rows.index.to_numpy(), size=min(k, len(cls_rows)), replace=False))
    return manifest.subset(np.sort(np.array(keep)))


def normalisation(cfg: RunConfig, train: Manifest, preprocess=None) -> tuple[tuple, tuple]:
    n = cfg.normalize
    if n.kind == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if n.kind == "fixed":
        if n.mean is None or n.std is None:
            raise DataError("normalize.kind: fixed needs normalize.mean and normalize.std")
        return tuple(n.mean), tuple(n.std)
    mean, std = channel_stats(
        train,
        max_images=2000,
        seed=cfg.seed,
        image_px=cfg.data.image_px,
        preprocess=preprocess,
        crop_px=cfg.data.crop_px,
    )
    return tuple(mean), tuple(std)


def check_val_classes(manifest: Manifest, cfg: RunConfig, notes: list[str] | None = None) -> None:
    """A validation split without every class has no (macro) AUC: torchmetrics reports 0.0, and
    best.pt selection and early stopping would run on that number. Refuse, naming the split and
    the fix, unless train.one_class_val allows monitoring val_loss; then say so in `notes`."""
    if "val" not in manifest.splits:
        return
    val = manifest.split("val")
    counts = val.frame["label"].value_counts()
    missing = [c for c in manifest.class_names if counts.get(c, 0) == 0]
    if not missing or len(val) == 0:
        return
    described = ", ".join(f"{c!r}: {int(counts.get(c, 0))}" for c in manifest.class_names)
    if cfg.train.one_class_val == "raise":
        raise DataError(
            f"{manifest.source}: the validation split has no image of class(es) {missing} ({described}), so val_auc "
            f"is undefined and cannot select best.pt or stop early. Give the val split every class (a split column "
            f"with each class in val, or a larger data.split.val_fraction / data.max_per_split), or set "
            f"train.one_class_val=monitor_val_loss to select on val_loss instead"
        )
    note = (
        f"validation split has no image of class(es) {missing} ({described}): val_auc is undefined, "
        f"best.pt and early stopping used val_loss (train.one_class_val: monitor_val_loss)"
    )
    if notes is not None and note not in notes:  # the last check of build_run_data: say it once
        log.warning(note)
        notes.append(note)


def load_tiles(cfg: RunConfig) -> tuple[TileCohort, dict]:
    """The tile cohort of `data.tiles` and the data.* values it decides (image_px, mpp)."""
    d = cfg.data
    if not d.tiles or not d.labels:
        raise DataError(f"data.tiles ({d.tiles}) needs data.labels: a CSV with slide,label[,patient][,split]")
    cohort = read_tile_cohort(expand(d.tiles), expand(d.labels))
    if d.mpp is not None and cohort.mpp is not None and abs(d.mpp - cohort.mpp) > 1e-3 * cohort.mpp:
        raise DataError(
            f"data.mpp is {d.mpp:g} but the tiles in {d.tiles} are at {cohort.mpp:g} um/px: "
            f"remove data.mpp (it is read from the tiles) or tile again at {d.mpp:g}"
        )
    resolved: dict = {"mpp": cohort.mpp}
    if "image_px" not in d.model_fields_set:  # default: train at the tiles' size
        resolved["image_px"] = cohort.tile_px
    return cohort, resolved


def require_training_slides(manifest: Manifest, source: str) -> None:
    """Whole-slide data: at least two classes among the training slides, said in slides."""
    train = manifest.split("train").frame
    per_class = train.groupby("label")["slide"].nunique()
    if len(per_class) < 2:
        described = ", ".join(f"{c!r}: {n} slide(s)" for c, n in per_class.items()) or "none"
        raise DataError(
            f"{source}: the training slides hold one class only ({described}); a classifier needs "
            f"slides of at least two classes in training (check the labels and the split column)"
        )


def build_run_data(
    cfg: RunConfig, run_dir: Path | None = None, notes: list[str] | None = None, manifest: Manifest | None = None
) -> RunData:
    """`notes` collects what metrics.json should say about the data (a one-class val split);
    `manifest`: data already read (a notebook's Manifest) instead of `cfg.data.path`."""
    # split and subsample first, then decode-check only the rows that will be used
    cohort: TileCohort | None = None
    resolved: dict = {}
    if cfg.data.tiles:
        cohort, resolved = load_tiles(cfg)
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=resolved)})
        if notes is not None:
            notes.extend(n for n in cohort.notes if n not in notes)
        base = cohort.manifest.with_positive_class(cfg.data.positive_class)
    elif manifest is not None:
        base = manifest.with_positive_class(cfg.data.positive_class)
    else:
        base = load_manifest(cfg, verify=False)
    manifest = assign_splits(base, cfg)
    manifest = subsample(manifest, cfg.data.max_per_split, cfg.seed)
    if cohort is not None:
        require_training_slides(manifest, cohort.manifest.source)
    check_val_classes(manifest, cfg)  # before any decoding: label counts are enough
    d = cfg.data
    # tiles were decoded and encoded by the tiler: no second decode pass over every tile
    if d.verify and cohort is None:
        manifest = verify_manifest(manifest, on_error=d.on_error, non_rgb=d.non_rgb, size_policy=d.size_policy)
        if manifest.skipped:
            log.warning(
                "%d bad image(s) skipped (on_error: skip); first: %s", len(manifest.skipped), manifest.skipped[0][1]
            )
    check_val_classes(manifest, cfg, notes)  # again: skipped images may have emptied a class
    if run_dir is not None:
        manifest.to_csv(Path(run_dir) / "splits.csv")
    train_m = manifest.split("train")
    if len(train_m) == 0:
        raise DataError(f"{manifest.source}: no training rows after splitting")
    train_m.require_classes(2)
    from histoflow.preprocess.pipeline import build_preprocessor

    pre = build_preprocessor(cfg.preprocess)
    preprocess = None if pre.is_identity else pre
    mean, std = normalisation(cfg, train_m, preprocess)
    common: dict[str, Any] = dict(
        image_px=d.image_px,
        size_policy=d.size_policy,
        non_rgb=d.non_rgb,
        cache=d.cache,
        class_names=manifest.class_names,
        crop_px=d.crop_px,
        preprocess=preprocess,
    )
    train = PatchDataset(train_m, transform=build_transform(cfg.augment, d.crop_px or d.image_px), **common)
    val = PatchDataset(manifest.split("val"), **common) if "val" in manifest.splits else None
    test = PatchDataset(manifest.split("test"), **common) if "test" in manifest.splits else None
    return RunData(
        manifest,
        manifest.class_names,
        train,
        val,
        test,
        mean,
        std,
        None if preprocess is None else pre.state_dict(),
        resolved,
        cohort,
    )


def train_sampler(cfg: RunConfig, data: RunData):
    """The training sampler: per-epoch draws from whole slides (tiles), class-balanced draws
    (data.balance.sampler), or None (a plain shuffle)."""
    d = cfg.data
    if data.cohort is not None and (d.tiles_per_slide or d.balance.sampler):
        slides = data.manifest.split("train").frame["slide"].to_numpy()
        return SlideEpochSampler(slides, data.train.labels, d.tiles_per_slide, d.balance.sampler, cfg.seed)
    if d.balance.sampler:
        return balanced_sampler(data.train.labels, len(data.class_names), cfg.seed)
    return None
