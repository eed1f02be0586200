"""Training: a LightningModule, callbacks, and `fit(config, out)`."""

from histoflow.train.fit import fit

__all__ = ["fit"]
