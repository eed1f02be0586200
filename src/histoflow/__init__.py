"""histoflow: computational pathology from patches and whole slides.

The public API, one name per step of the data flow (none shares its name with a subpackage,
so importing `histoflow.predict` or `histoflow.evaluate` never replaces one of them):

    cfg = load_config("pcam_simple_cnn", ["train.epochs=3"])   # a recipe by name -> RunConfig
    manifest = read_manifest("/data/patches")                  # every image, its label, patient, split
    run_dir = run(cfg, "runs/demo", manifest=manifest)         # fit -> evaluate -> report
    evaluate_checkpoint(run_dir / "checkpoints/best.pt", "/data/holdout", "runs/demo/holdout")
    probs = predict_images(run_dir / "checkpoints/best.pt", arrays_or_paths)   # in memory
    predict_folder(checkpoint, "/data/unlabelled", "predictions.csv")
    predict_slides(checkpoint, ["slide.svs"], "preds")          # heatmaps, GeoJSON, slide scores
    app = view(["slide.svs", "preds"])                         # the slide lab (an ASGI app)

examples/notebook_api.py runs this flow end to end on real data (CI executes it).
"""

from histoflow.config import RunConfig, load_config  # noqa: E402
from histoflow.core.version import __version__
from histoflow.data.manifest import read_manifest  # noqa: E402
from histoflow.data.splits import split_manifest  # noqa: E402
from histoflow.slide import open_slide  # noqa: E402
from histoflow.tiling import extract_tiles  # noqa: E402

__all__ = [
    "Checkpoint",
    "RunConfig",
    "TileDataset",
    "__version__",
    "evaluate_checkpoint",
    "extract_tiles",
    "fit",
    "load_config",
    "open_slide",
    "predict_folder",
    "predict_images",
    "predict_slides",
    "read_manifest",
    "run",
    "split_manifest",
    "view",
]

# Names that import torch load only when asked for: tiling workers stay light.
_LAZY = {
    "Checkpoint": ("histoflow.checkpoint", "Checkpoint"),
    "TileDataset": ("histoflow.tiling.dataset", "TileDataset"),
    "fit": ("histoflow.train.fit", "fit"),
    "run": ("histoflow.workflows.run", "run"),
    "evaluate_checkpoint": ("histoflow.evaluate.run", "evaluate_checkpoint"),
    "predict_folder": ("histoflow.predict.folder", "predict_to_csv"),
    "predict_images": ("histoflow.predict.images", "predict_images"),
    "predict_slides": ("histoflow.mil.apply", "predict_slides_with_mil"),  # plain or with a MIL aggregator
    "view": ("histoflow.viewer.server", "view"),  # the package is `viewer`: no public name is a subpackage's
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'histoflow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
