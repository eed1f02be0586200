"""Models: a registry of factories, one Classifier shape (preprocess -> backbone -> head)."""

from histoflow.models.classifier import Classifier
from histoflow.models.factory import create_model, list_models
from histoflow.models.registry import register_model

__all__ = ["Classifier", "create_model", "list_models", "register_model"]
