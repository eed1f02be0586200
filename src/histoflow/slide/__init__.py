"""Whole-slide image readers behind one protocol (see base.py); `open_slide` (open.py) picks the backend."""

from histoflow.slide.array import ArraySlide
from histoflow.slide.base import BACKENDS, BaseSlide, SlideReader, slide_id_of
from histoflow.slide.open import open_slide

__all__ = ["BACKENDS", "ArraySlide", "BaseSlide", "SlideReader", "open_slide", "slide_id_of"]
