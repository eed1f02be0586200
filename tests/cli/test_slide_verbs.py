"""Every verb of the slide, predict and MIL stages: one happy path and one bad input each, and the
`--config` + `--set` precedence shared by tile, predict-slide and embed.

Bad input: exit code 2 and one `error:` line naming the file or the field.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import yaml
from typer.testing import CliRunner

from histoflow.cli import app
from histoflow.cli.common import state
from tests.conftest import need_data
from tests.predict.test_slide import _tiny_checkpoint

runner = CliRunner()


def _invoke(*args: str):
    try:
        return runner.invoke(app, ["--quiet", *map(str, args)])
    finally:
        state.quiet = state.debug = False


def _error(result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    text = result.output[result.output.index("error:") :]
    for word in words:
        assert word in text, text
    assert "Traceback" not in result.output
    return text


def test_info_happy_and_missing(tmp_path):
    result = _invoke("info", need_data("wsi", "cmu-1-small-region.svs"), "--json")
    assert result.exit_code == 0 and json.loads(result.output)["levels"]
    _error(_invoke("info", tmp_path / "gone.svs"), "gone.svs")


def test_tile_config_file_then_options_then_set(tmp_path):
    """The YAML sets tile_px and a tissue threshold, a typed option wins over the file, --set wins last."""
    slide = need_data("wsi", "cmu-1-small-region.svs")
    config = tmp_path / "tile.yaml"
    config.write_text("tile_px: 64\nmpp: 2.0\ntissue_threshold: 0.9\njpeg_quality: 50\n")
    out = tmp_path / "tiles"
    result = _invoke(
        "tile",
        slide,
        "--out",
        out,
        "--config",
        config,
        "--tissue-threshold",
        "0.2",
        "--set",
        "jpeg_quality=70",
        "--processes",
        "1",
    )
    assert result.exit_code == 0, result.output
    used = json.loads((out / "config.json").read_text())["tile"]
    assert used["tile_px"] == 64 and used["mpp"] == 2.0  # from the file
    assert used["tissue_threshold"] == 0.2  # the typed option beats the file
    assert used["jpeg_quality"] == 70  # --set beats both
    record = yaml.safe_load((out / "command.yaml").read_text())
    assert record["config"] == used and "tile_px" not in record["options"]  # defaults not typed are not claimed
    assert record["options"]["tissue_threshold"] == 0.2
    assert pq.read_table(out / "manifest.parquet").num_rows > 0


def test_tile_bad_config_key_and_value(tmp_path):
    slide = need_data("wsi", "cmu-1-small-region.svs")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tile_pix: 64\n")
    _error(_invoke("tile", slide, "--out", tmp_path / "o", "--config", bad), "bad.yaml", "tile_pix", "tile_px")
    _error(_invoke("tile", slide, "--out", tmp_path / "o", "--set", "jpeg_quality=300"), "jpeg_quality")


def test_predict_happy_and_missing_checkpoint(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "m.pt")
    images = need_data("pcam", "valid", "1")
    out = tmp_path / "p.csv"
    result = _invoke("predict", "--checkpoint", ckpt, images, "--out", out)
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 1 + len(list(images.glob("*.jpg")))
    _error(_invoke("predict", "--checkpoint", tmp_path / "none.pt", images, "--out", out), "none.pt")


def test_predict_slide_config_file_and_bad_checkpoint(tmp_path):
    slide = need_data("wsi", "cmu-1-small-region.svs")
    ckpt = _tiny_checkpoint(tmp_path / "m.pt")
    config = tmp_path / "slide.yaml"
    config.write_text(yaml.safe_dump({"mpp": 4.0, "aggregate": {"method": "max"}, "max_tiles": 20}))
    out = tmp_path / "o"
    result = _invoke(
        "predict-slide", slide, "--checkpoint", ckpt, "--out", out, "--config", config, "--set", "aggregate.k=3"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(next(out.rglob("slide.json")).read_text())
    assert report["score_method"] == "max" and report["aggregation"] == {"method": "max", "k": 3, "threshold": 0.5}
    assert yaml.safe_load((out / "command.yaml").read_text())["config"]["max_tiles"] == 20
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    _error(_invoke("predict-slide", slide, "--checkpoint", junk, "--out", tmp_path / "o2", "--mpp", "4"), "junk.pt")


def test_embed_needs_slides_or_bags(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "m.pt")
    _error(_invoke("embed", "--checkpoint", ckpt, "--out", tmp_path / "e"), "--pcam-bags")


def test_train_mil_missing_config(tmp_path):
    _error(_invoke("train-mil", tmp_path / "mil.yaml"), "mil.yaml")
