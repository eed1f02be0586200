"""`TileConfig`: everything that decides which tiles a slide gives and what their pixels are.

A strict, frozen pydantic model like every other schema: constraints are types, and an invalid
value raises `ConfigError` naming the field and what it expects, whether the config comes from
YAML (`load_model_config`) or is built in code (`TileConfig(tile_px=..., mpp=...)`, which the
CLI does). Its `fingerprint()` is stored beside every tiling run: a resumed run refuses a
different config, so the hash covers every field that changes a tile (not the thumbnail's size).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import (
    Field,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from histoflow.config.base import FrozenConfig
from histoflow.core.errors import ConfigError

DEFAULT_MPP = 0.5  # the field's usual resolution (20x on most scanners)
PICTURE_FIELDS = frozenset({"thumbnail_px"})  # change pictures only, never a tile


class TileConfig(FrozenConfig):
    """Everything that decides which tiles a slide gives and what their pixels are."""

    tile_px: int = Field(default=256, ge=8, strict=True)
    mpp: PositiveFloat | None = None  # output microns per pixel (0.5 when no tile_um/magnification)
    tile_um: PositiveFloat | None = None  # alternative: physical tile side (mpp = tile_um / tile_px)
    magnification: PositiveFloat | None = None  # alternative: e.g. 20 (uses the slide's objective power)
    overlap_px: int = Field(default=0, ge=0)  # output px shared by neighbours (stride = tile_px - overlap_px)
    tissue_threshold: float = Field(default=0.5, ge=0, le=1)  # keep tiles with at least this tissue fraction
    # the methods of histoflow.tiling.tissue.METHODS (config sits below tiling, so they are spelt out)
    tissue_method: Literal["saturation", "od"] = "saturation"
    mask_um_per_px: float = 4.0  # resolution of the tissue mask view
    min_tissue_um2: float = 5000.0  # drop tissue specks smaller than this
    reject_pen: bool = True
    whitespace_max: float | None = Field(default=0.8, ge=0, le=1)  # QC: reject tiles with more glass than this fraction
    blur_min: float | None = None  # QC: reject tiles whose Laplacian variance is below this
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(default=90, ge=1, le=100)
    tiles_per_shard: PositiveInt = 256
    slide_mpp: PositiveFloat | None = None  # override/supply the slides' level-0 mpp
    backend: str = "auto"
    on_tile_error: Literal["fail", "skip"] = "fail"  # fail: the slide fails; skip: the tile is rejected and counted
    thumbnail_px: PositiveInt = 1200  # long side of slides/<id>/thumbnail.png (a picture only: not in the fingerprint)

    @model_validator(mode="before")
    @classmethod
    def _default_resolution(cls, data: Any) -> Any:
        if isinstance(data, dict) and all(data.get(n) is None for n in ("mpp", "tile_um", "magnification")):
            data = {**data, "mpp": DEFAULT_MPP}
        return data

    @model_validator(mode="after")
    def _one_resolution(self) -> TileConfig:
        if not self.overlap_px < self.tile_px:
            raise ValueError(f"overlap_px must be in [0, tile_px), got {self.overlap_px}")
        given = [n for n in ("mpp", "tile_um", "magnification") if getattr(self, n) is not None]
        if len(given) > 1 and not (given == ["mpp", "tile_um"] and self.derived_mpp_matches()):
            raise ValueError(f"give one of mpp, tile_um or magnification, got {given}")
        return self

    def derived_mpp_matches(self) -> bool:
        return (
            self.mpp is not None
            and self.tile_um is not None
            and math.isclose(self.mpp, self.tile_um / self.tile_px, rel_tol=1e-6)
        )

    def target_mpp(self, slide_mpp: float | None, objective_power: float | None, slide: str) -> float:
        """The output mpp for one slide."""
        if self.tile_um is not None:
            return self.tile_um / self.tile_px
        if self.mpp is not None:
            return self.mpp
        if self.magnification is not None:
            if slide_mpp is None:
                raise ConfigError(f"{slide}: no mpp metadata; pass --slide-mpp to tile it at a magnification")
            if not objective_power:
                raise ConfigError(
                    f"{slide}: no objective power in the metadata; request --mpp instead of a magnification"
                )
            return round(slide_mpp * objective_power / self.magnification, 6)
        raise ConfigError("give one of mpp, tile_um or magnification")

    def to_dict(self) -> dict:
        return self.model_dump()

    def fingerprint(self) -> str:
        """Hash of the fields that change tile ids or pixels (resume refuses a different config).

        The preview pictures' fields (PICTURE_FIELDS) are left out: another thumbnail size
        changes no tile, and runs tiled before such a field existed keep their fingerprint."""
        tiles = {k: v for k, v in self.to_dict().items() if k not in PICTURE_FIELDS}
        return hashlib.sha1(json.dumps(tiles, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict) -> TileConfig:
        unknown = set(d) - set(cls.model_fields)
        if unknown:
            raise ConfigError(f"unknown tile config key(s) {sorted(unknown)}")
        return cls(**d)
