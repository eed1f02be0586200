"""histoflow's version, in a module of its own so that any layer can record it without cycles."""

__version__ = "0.1.0"

# The libraries whose versions decide a run's numbers: recorded in metrics.json, shown by doctor.
CORE_PACKAGES = ("torch", "torchvision", "timm", "lightning", "torchmetrics", "sklearn")
