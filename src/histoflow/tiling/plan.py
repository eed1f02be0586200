"""Planning one slide: tissue mask, tile grid and preview images (a pure function of path + config).

`plan_slide` is the first task every engine maps (one per slide); its SlidePlan carries the
tile specs the extraction tasks then read. Planning never raises for a bad slide: the error is
returned in the plan, so one corrupt file cannot stop a batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from histoflow.config.tiling import TileConfig
from histoflow.core.errors import HistoflowError
from histoflow.tiling.grid import Grid, TileSpec, tile_grid
from histoflow.tiling.preview import Caption, draw_overview, jpeg_bytes, picture_view, png_bytes
from histoflow.tiling.readers import cached_reader, slide_id_for
from histoflow.tiling.tissue import TissueMask, dark_background_note, tissue_mask

log = logging.getLogger(__name__)


@dataclass
class SlidePlan:
    path: str
    slide_id: str
    specs: list[TileSpec] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    n_candidates: int = 0
    rejected_tissue: int = 0
    tissue_fraction: float = 0.0
    pen_fraction: float = 0.0
    dark_background_note: str | None = None  # a fluorescence/dark-field view (tissue.dark_background_note)
    plan_s: float = 0.0
    error: str | None = None
    thumbnail_png: bytes = b""
    view_jpg: bytes = b""
    mask_png: bytes = b""

    @property
    def n_shards(self) -> int:
        return (self.specs[-1].shard + 1) if self.specs else 0


def mask_view(slide, cfg: TileConfig) -> tuple[np.ndarray, float]:
    """A low-resolution RGB view of the whole slide and its downsample (level-0 px per px)."""
    w, h = slide.dimensions
    if slide.mpp:
        downsample = max(1.0, cfg.mask_um_per_px / slide.mpp)
    else:
        downsample = max(1.0, max(w, h) / 2048)
    downsample = max(downsample, max(w, h) / 8192)  # keep the view a few tens of MB at most
    return slide.read_downsampled(downsample), downsample


def slide_grid(slide, cfg: TileConfig, allow_upsample: bool = False) -> tuple[np.ndarray, TissueMask, Grid]:
    """(low-resolution view, tissue mask, tile grid) of an open slide: the planning both tiling
    and slide prediction do."""
    view, downsample = mask_view(slide, cfg)
    mask = tissue_mask(
        view,
        downsample,
        mpp=slide.mpp,
        method=cfg.tissue_method,
        min_area_um2=cfg.min_tissue_um2,
        reject_pen=cfg.reject_pen,
    )
    if mask.dark_background:  # said here so slide prediction warns too, not only tiling's report
        log.warning("%s", dark_background_note(slide.slide_id, mask))
    return view, mask, tile_grid(slide, mask, cfg, allow_upsample=allow_upsample)


def plan_slide(path: str, cfg: TileConfig) -> SlidePlan:
    """Tissue mask, tile grid and preview images of one slide. Never raises for a bad slide:
    the error is returned, so one corrupt file cannot stop a batch."""
    t0 = time.perf_counter()
    plan = SlidePlan(path=str(path), slide_id=slide_id_for(str(path)))
    try:
        slide = cached_reader(str(path), cfg)
        plan.slide_id = slide.slide_id
        plan.info = slide.info()
        view, mask, grid = slide_grid(slide, cfg)
        downsample = mask.downsample
        plan.specs = grid.specs
        plan.n_candidates, plan.rejected_tissue = grid.n_candidates, grid.rejected_tissue
        plan.tissue_fraction, plan.pen_fraction = mask.tissue_fraction, mask.pen_fraction
        if mask.dark_background:
            plan.dark_background_note = dark_background_note(plan.slide_id, mask)
        plan.info.update(
            tile_level=grid.level,
            region_px0=grid.region_px0,
            stride_px0=grid.stride_px0,
            tile_mpp=grid.mpp,
            mask_downsample=round(downsample, 4),
            mask_threshold=mask.threshold,
        )
        picture, picture_ds = picture_view(slide, view, downsample, cfg.thumbnail_px)
        caption = Caption(plan.slide_id, slide.dimensions, slide.mpp, cfg.tile_px, grid.mpp, cfg.tissue_threshold)
        plan.thumbnail_png = png_bytes(draw_overview(picture, picture_ds, mask, grid.specs, grid.region_px0, caption))
        plan.view_jpg = jpeg_bytes(view)
        plan.mask_png = png_bytes(mask.mask.astype(np.uint8) * 255)
    except HistoflowError as exc:
        plan.error = str(exc)
    except Exception as exc:  # an unexpected failure in one slide is still that slide's failure
        log.exception("%s: planning failed", path)
        plan.error = f"{path}: {type(exc).__name__}: {exc}"
    plan.plan_s = round(time.perf_counter() - t0, 3)
    return plan
