"""The slide lab: a web viewer for slides with histoflow's outputs on top (`histoflow view`).

`histoflow.view(paths)` returns the ASGI app; `serve_in_thread(app)` runs it in a notebook.
Modules: deepzoom (tiles over any reader), catalog (which slides and outputs), overlays and
features (reading them), colours, cache, service (state, no HTTP), app (routes), server.
Kept free of Starlette imports at package level: `import histoflow.viewer` needs no extra.
"""

from histoflow.viewer.deepzoom import DeepZoom, DeepZoomGeometry

__all__ = ["DeepZoom", "DeepZoomGeometry"]
