"""Tissue detection, tile grids and tile extraction to Parquet shards (local or Spark)."""

from histoflow.config.tiling import TileConfig
from histoflow.tiling.extract import extract_tiles
from histoflow.tiling.grid import TileSpec, tile_grid, tile_id
from histoflow.tiling.local import LocalEngine
from histoflow.tiling.plan import plan_slide
from histoflow.tiling.read import read_tile
from histoflow.tiling.tissue import TissueMask, tissue_mask
from histoflow.tiling.work import process_tile

__all__ = [
    "LocalEngine",
    "TileConfig",
    "TileDataset",
    "TileSpec",
    "TissueMask",
    "extract_tiles",
    "plan_slide",
    "process_tile",
    "read_tile",
    "tile_grid",
    "tile_id",
    "tissue_mask",
]


def __getattr__(name):
    if name == "TileDataset":  # torch is imported only by whoever asks for the dataset
        from histoflow.tiling.dataset import TileDataset

        return TileDataset
    raise AttributeError(name)
