"""A slide whose name has accents (`pätient é.svs`) goes through tile, TileDataset,
predict-slide and embed (TileDataset stored ids with numpy's ASCII-only bytes cast; issue 15)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from histoflow.tiling.dataset import TileDataset
from tests.conftest import need_data
from tests.predict.test_slide import _tiny_checkpoint
from tests.reliability.tiny import invoke

SID = "pätient é"


@pytest.mark.slow
def test_accented_slide_name_end_to_end(tmp_path):
    folder = tmp_path / "Dätä"
    folder.mkdir()
    slide = shutil.copy(need_data("wsi", "cmu-1-small-region.svs"), folder / f"{SID}.svs")
    tiles = tmp_path / "tiles"
    res = invoke("tile", str(slide), "--out", str(tiles), "--tile-px", "96", "--mpp", "0.972", "--processes", "1")
    assert res.exit_code == 0, res.output

    ds = TileDataset(tiles / "shards")
    assert len(ds) > 20
    assert ds.tile_id(0).startswith(f"{SID}_") and ds.slide_ids[0].decode() == SID
    assert ds.load(0).shape == (96, 96, 3)

    ckpt = _tiny_checkpoint(tmp_path / "m.pt", mpp=0.972)
    res = invoke("predict-slide", str(slide), "--checkpoint", str(ckpt), "--out", str(tmp_path / "pred"))
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "pred" / SID / "slide.json").read_text(encoding="utf-8"))
    assert rep["slide_id"] == SID and rep["status"] == "complete"
    res = invoke(
        "predict-slide", str(slide), "--tiles-dir", str(tiles), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p2")
    )
    assert res.exit_code == 0, res.output
    from_tiles = pq.read_table(tmp_path / "p2" / SID / "tiles.parquet").to_pydict()["tile_id"]
    assert set(from_tiles) == {ds.tile_id(i) for i in range(len(ds))}

    res = invoke(
        "embed", str(slide), "--tiles-dir", str(tiles), "--checkpoint", str(ckpt), "--out", str(tmp_path / "emb")
    )
    assert res.exit_code == 0, res.output
    e = np.load(tmp_path / "emb" / SID / "embeddings.npy")
    assert e.shape[0] == len(ds) == pq.read_table(tmp_path / "emb" / SID / "tiles.parquet").num_rows
