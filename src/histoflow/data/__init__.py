"""Patch data: manifests from every layout, verification, splits, datasets, samplers, transforms."""

from histoflow.data.manifest import Manifest, read_manifest
from histoflow.data.splits import kfold_manifests, split_manifest

__all__ = ["Manifest", "read_manifest", "split_manifest", "kfold_manifests"]
