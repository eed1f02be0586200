"""Tissue detection, tile grids and tile extraction to Parquet shards (local or Spark)."""

from histoflow.tiling.extract import LocalEngine, extract_tiles, plan_slide, process_tile, read_tile
from histoflow.tiling.grid import TileConfig, TileSpec, tile_grid, tile_id
from histoflow.tiling.tissue import TissueMask, tissue_mask

__all__ = ["LocalEngine", "TileConfig", "TileSpec", "TissueMask", "extract_tiles", "plan_slide", "process_tile",
           "read_tile", "tile_grid", "tile_id", "tissue_mask", "TileDataset"]


def __getattr__(name):
    if name == "TileDataset":  # torch is imported only by whoever asks for the dataset
        from histoflow.tiling.dataset import TileDataset

        return TileDataset
    raise AttributeError(name)
