"""histoflow: computational pathology from patches and whole slides."""

__version__ = "0.1.0"

from histoflow.config import RunConfig, load_config  # noqa: E402
from histoflow.data.manifest import Manifest, read_manifest  # noqa: E402
from histoflow.data.splits import kfold_manifests, split_manifest  # noqa: E402

__all__ = ["__version__", "RunConfig", "load_config", "Manifest", "read_manifest", "split_manifest", "kfold_manifests"]
