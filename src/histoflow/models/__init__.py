"""Models: a registry of factories, one Classifier shape (preprocess -> backbone -> head)."""

from histoflow.models.classifier import Classifier
from histoflow.models.factory import create_model
from histoflow.models.registry import register_model, registered

__all__ = ["Classifier", "create_model", "register_model", "registered", "list_models"]


def list_models() -> dict[str, str]:
    return registered()
