"""Whole-slide image readers behind one protocol (see base.py); `open_slide` picks the backend."""

from histoflow.slide.array import ArraySlide
from histoflow.slide.base import BACKENDS, BaseSlide, SlideReader, open_slide, slide_id_of

__all__ = ["ArraySlide", "BACKENDS", "BaseSlide", "SlideReader", "open_slide", "slide_id_of"]
