"""Stratified, patient-grouped, seeded splits.

No patient (or slide) is ever in two splits when the manifest has such a column: patch-level
random splits put neighbouring patches of one patient in train and test and inflate the
published BreakHis/IDC numbers. scikit-learn's StratifiedGroupKFold does the grouping; a
fraction f of the data is the first fold of round(1/f) folds.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from histoflow.core.errors import ConfigError, DataError
from histoflow.data.manifest import Manifest


def resolve_group(manifest: Manifest, group_by: str | None) -> np.ndarray | None:
    """The group label per row, or None for an ungrouped split. `group_by="auto"` picks
    patient, then slide, when every row has one."""
    if group_by in (None, "none", ""):
        return None
    if group_by == "auto":
        col = manifest.group_column()
        return None if col is None else manifest.frame[col].to_numpy()
    if group_by not in manifest.frame.columns:
        raise ConfigError(
            f"split.group_by: column {group_by!r} is not in the manifest (columns: {list(manifest.frame.columns)})"
        )
    values = manifest.frame[group_by].astype(str)
    if (values == "").any():
        raise DataError(f"{manifest.source}: {int((values == '').sum())} rows have no {group_by!r}; cannot group by it")
    return values.to_numpy()


def _holdout(indices: np.ndarray, y: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int):
    """Split `indices` into (rest, held_out) with about `fraction` held out, stratified."""
    if groups is None:
        stratify = y if np.bincount(y).min() >= 2 else None
        rest, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=stratify)
        return np.sort(rest), np.sort(held)
    n_splits = max(2, int(round(1.0 / fraction)))
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise DataError(
            f"cannot make a grouped split: only {n_groups} group (patient/slide) in the data; "
            f"set split.group_by: none to split patches of one patient (leaky)"
        )
    n_splits = min(n_splits, n_groups)
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest, held = next(folds.split(indices, y, groups))
    return np.sort(indices[rest]), np.sort(indices[held])


def split_manifest(
    manifest: Manifest,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    group_by: str | None = "auto",
    seed: int = 0,
    stratify: bool = True,
) -> Manifest:
    """Fill the `split` column with train/val/test; returns a new Manifest.

    `stratify=False` splits groups without looking at labels (for a table whose rows have no
    class to balance, e.g. images that all hold a mitosis)."""
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"split.{name} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"split: val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training data"
        )
    if stratify:
        manifest.require_classes(2)
    y = manifest.targets if stratify else np.zeros(len(manifest), dtype=int)
    groups = resolve_group(manifest, group_by)
    indices = np.arange(len(manifest))
    split = np.array(["train"] * len(manifest), dtype=object)
    rest = indices
    if test_fraction > 0:
        rest, test = _holdout(indices, y, groups, test_fraction, seed)
        split[test] = "test"
    if val_fraction > 0:
        sub_groups = None if groups is None else groups[rest]
        rel = val_fraction / (1.0 - test_fraction)
        _, val = _holdout(rest, y[rest], sub_groups, rel, seed + 1)
        split[val] = "val"
    frame = manifest.frame.copy()
    frame["split"] = split
    return Manifest(frame, manifest.class_names, manifest.format, manifest.source, list(manifest.skipped))


def kfold_manifests(
    manifest: Manifest, n_folds: int = 5, group_by: str | None = "auto", seed: int = 0
) -> list[Manifest]:
    """Stratified (grouped) k-fold: fold k has split=='val' on its held-out part, 'train' elsewhere."""
    if n_folds < 2:
        raise ConfigError(f"n_folds must be >= 2, got {n_folds}")
    manifest.require_classes(2)
    y = manifest.targets
    groups = resolve_group(manifest, group_by)
    if groups is None:
        folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    else:
        if len(np.unique(groups)) < n_folds:
            raise DataError(
                f"{n_folds}-fold grouped split needs at least {n_folds} patients/slides; found {len(np.unique(groups))}"
            )
        folds = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups)
    out = []
    for _, val in folds:
        frame = manifest.frame.copy()
        frame["split"] = "train"
        frame.loc[val, "split"] = "val"
        out.append(Manifest(frame, manifest.class_names, manifest.format, manifest.source))
    return out
