"""The viewer's state and answers, apart from HTTP: slides opened on demand, tiles and overlays
through bounded caches. app.py maps each method to a route; NotFound becomes a 404.

Readers stay open in a small LRU (`max_open_slides`); an evicted reader is dropped, not closed,
so a request still using it finishes (the handle closes when the last reference goes). Every
cache is bounded in bytes, so memory stays flat however many tiles are served.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote

from histoflow.core.errors import HistoflowError
from histoflow.viewer import colours, overlays
from histoflow.viewer.cache import ByteCache
from histoflow.viewer.catalog import Catalog, SlideEntry, discover
from histoflow.viewer.deepzoom import DeepZoom, TileOutOfRange, encode_jpeg

log = logging.getLogger(__name__)
THUMBNAIL_PX = 192


class NotFound(LookupError):
    """Nothing to serve at this address: unknown slide or overlay, a tile off the pyramid, a
    slide that cannot be read. The message says which; the server answers 404 with it."""


class SlideService:
    def __init__(
        self,
        catalog: Catalog,
        tile_cache_mb: float = 128,
        max_open_slides: int = 16,
        jpeg_quality: int = 85,
        tile_px: int = 254,
    ):
        self.catalog = catalog
        self.tiles = ByteCache(int(tile_cache_mb * 1e6))
        self.images = ByteCache(32_000_000)  # thumbnails and overlay PNGs
        self.max_open_slides = max(1, max_open_slides)
        self.jpeg_quality = jpeg_quality
        self.tile_px = tile_px
        self._open: OrderedDict[str, DeepZoom] = OrderedDict()
        self._info: dict[str, dict] = {}
        self._loaded: dict[tuple[str, str], overlays.Loaded] = {}
        self._overlay_errors: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._open_locks: dict[str, threading.Lock] = {}

    @classmethod
    def from_paths(cls, paths, **options) -> SlideService:
        return cls(discover(paths), **options)

    # -- slides ------------------------------------------------------------------------------
    def entry(self, slide_id: str) -> SlideEntry:
        entry = self.catalog.slides.get(slide_id)
        if entry is None:
            raise NotFound(f"no slide {slide_id!r} in this viewer")
        return entry

    def deepzoom(self, slide_id: str) -> DeepZoom:
        """The slide's tile function, opening the slide if needed (NotFound if it cannot be read)."""
        entry = self.entry(slide_id)
        with self._lock:
            dz = self._open.get(slide_id)
            if dz is not None:
                self._open.move_to_end(slide_id)
                return dz
            lock = self._open_locks.setdefault(slide_id, threading.Lock())
        if entry.error:
            raise NotFound(entry.error)
        with lock:  # one opening per slide, however many tile requests arrive at once
            with self._lock:
                dz = self._open.get(slide_id)
            if dz is None:
                dz = self._open_slide(entry)
        return dz

    def _open_slide(self, entry: SlideEntry) -> DeepZoom:
        from histoflow.slide.open import open_slide

        try:
            reader = open_slide(entry.path) if entry.path is not None else None
        except (HistoflowError, OSError) as exc:
            entry.error = str(exc)
            raise NotFound(entry.error) from exc
        if reader is None:
            raise NotFound(entry.error or f"{entry.id}: no slide file")
        dz = DeepZoom(reader, tile_px=self.tile_px)
        self._info[entry.id] = reader.info()
        with self._lock:
            self._open[entry.id] = dz
            while len(self._open) > self.max_open_slides:
                self._open.popitem(last=False)
        return dz

    def slides(self) -> dict:
        """The list: every slide with its scores and its error, if any (opening each once)."""
        out = []
        for sid, entry in self.catalog.slides.items():
            if sid not in self._info and not entry.error:
                try:
                    self.deepzoom(sid)
                except NotFound:
                    pass  # entry.error now says why
            info = self._info.get(sid) or {}
            out.append(
                {
                    "id": sid,
                    "name": Path(entry.path).name if entry.path else sid,
                    "error": entry.error,
                    "scores": entry.scores,
                    "overlays": len(entry.overlays),
                    "width": (info.get("levels") or [{}])[0].get("width"),
                    "height": (info.get("levels") or [{}])[0].get("height"),
                    "mpp": info.get("mpp"),
                }
            )
        return {"slides": out, "problems": self.catalog.problems}

    def slide_info(self, slide_id: str) -> dict:
        entry = self.entry(slide_id)
        dz = self.deepzoom(slide_id)
        info = dict(self._info[slide_id])
        info.pop("path", None)  # the page never needs where the file is
        info.update(
            id=slide_id,
            name=Path(entry.path).name if entry.path else slide_id,
            scores=entry.scores,
            dzi=dz.geometry.to_dzi(f"api/slides/{quote(slide_id, safe='')}/tiles/"),
            deepzoom_levels=dz.geometry.level_count,
            overlays=[self.describe_overlay(slide_id, ov.id) for ov in entry.overlays],
            colour_maps={name: colours.stops(name) for name in colours.COLOURMAPS},
        )
        return info

    # -- tiles -------------------------------------------------------------------------------
    def cached_tile(self, slide_id: str, level: int, col: int, row: int) -> bytes | None:
        return self.tiles.get((slide_id, level, col, row))

    def tile(self, slide_id: str, level: int, col: int, row: int) -> bytes:
        key = (slide_id, level, col, row)
        data = self.tiles.get(key)
        if data is not None:
            return data
        dz = self.deepzoom(slide_id)
        try:
            data = dz.tile_bytes(level, col, row, self.jpeg_quality)
        except TileOutOfRange as exc:
            raise NotFound(f"{slide_id}: {exc}") from None
        except HistoflowError as exc:  # a corrupt region: this tile is missing, the slide is not
            log.warning("%s", exc)
            raise NotFound(str(exc)) from None
        self.tiles.put(key, data)
        return data

    def thumbnail(self, slide_id: str) -> bytes:
        key = ("thumbnail", slide_id)
        data = self.images.get(key)
        if data is None:
            dz = self.deepzoom(slide_id)
            try:
                data = encode_jpeg(dz.reader.thumbnail(THUMBNAIL_PX), 80)
            except HistoflowError as exc:
                raise NotFound(str(exc)) from None
            self.images.put(key, data)
        return data

    # -- overlays ----------------------------------------------------------------------------
    def _load(self, slide_id: str, overlay_id: str) -> overlays.Loaded:
        entry = self.entry(slide_id)
        ov = next((o for o in entry.overlays if o.id == overlay_id), None)
        if ov is None:
            raise NotFound(f"{slide_id}: no overlay {overlay_id!r}")
        key = (slide_id, overlay_id)
        if key in self._overlay_errors:
            raise NotFound(self._overlay_errors[key])
        loaded = self._loaded.get(key)
        if loaded is None:
            mpp = self._info.get(slide_id, {}).get("mpp")
            try:
                loaded = overlays.load(ov, mpp)
            except HistoflowError as exc:
                self._overlay_errors[key] = str(exc)
                raise NotFound(str(exc)) from None
            self._loaded[key] = loaded
        return loaded

    def describe_overlay(self, slide_id: str, overlay_id: str) -> dict:
        ov = next(o for o in self.entry(slide_id).overlays if o.id == overlay_id)
        out = {"id": ov.id, "kind": ov.kind, "name": ov.name, "run": ov.run, "file": ov.path.name, "error": None}
        try:
            out.update(self._load(slide_id, overlay_id).describe())
        except NotFound as exc:
            out["error"] = str(exc)
        return out

    def overlay_png(self, slide_id: str, overlay_id: str, cmap: str, threshold: float | None) -> bytes:
        loaded = self._load(slide_id, overlay_id)
        if loaded.values is None:
            raise NotFound(f"{slide_id}: overlay {overlay_id} is not a raster")
        if cmap not in colours.COLOURMAPS:
            raise NotFound(f"unknown colour map {cmap!r}")
        key = ("overlay", slide_id, overlay_id, cmap, threshold)
        data = self.images.get(key)
        if data is None:
            data = overlays.render(loaded, cmap, threshold)
            self.images.put(key, data)
        return data

    def overlay_features(self, slide_id: str, overlay_id: str) -> dict:
        loaded = self._load(slide_id, overlay_id)
        if loaded.features is None:
            raise NotFound(f"{slide_id}: overlay {overlay_id} is not a vector overlay")
        return loaded.features

    def stats(self) -> dict:
        return {"tiles": self.tiles.stats(), "images": self.images.stats(), "open_slides": len(self._open)}
