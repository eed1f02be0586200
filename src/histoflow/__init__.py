"""histoflow: computational pathology from patches and whole slides."""

from histoflow.core.version import __version__

from histoflow.config import RunConfig, load_config  # noqa: E402
from histoflow.data.manifest import Manifest, read_manifest  # noqa: E402
from histoflow.data.splits import kfold_manifests, split_manifest  # noqa: E402

__all__ = ["__version__", "RunConfig", "load_config", "Manifest", "read_manifest", "split_manifest", "kfold_manifests"]

from histoflow.slide import open_slide  # noqa: E402
from histoflow.tiling import TileConfig, extract_tiles  # noqa: E402

__all__ += ["open_slide", "TileConfig", "extract_tiles", "TileDataset", "create_model", "list_models", "fit",
            "evaluate", "predict", "predict_slide"]


def __getattr__(name):
    """Names that import torch load only when asked for: tiling workers stay light."""
    if name == "TileDataset":
        from histoflow.tiling.dataset import TileDataset

        return TileDataset
    if name in ("create_model", "list_models"):
        import histoflow.models as models

        return getattr(models, name)
    if name == "fit":
        from histoflow.train.fit import fit

        return fit
    if name == "evaluate":
        from histoflow.evaluate.run import evaluate_checkpoint

        return evaluate_checkpoint
    if name == "predict":
        from histoflow.predict.folder import predict_to_csv

        return predict_to_csv
    if name == "predict_slide":
        from histoflow.mil.apply import predict_slides_with_mil as predict_slides

        return predict_slides
    raise AttributeError(f"module 'histoflow' has no attribute {name!r}")
