"""`histoflow embed --encoder`: what embed.json records, resumption, the resolution policy; MIL
training refusing slides embedded by different encoders and recording the encoder it learnt on;
predict-slide refusing such a MIL model with a patch checkpoint's features."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from histoflow.cli import app
from histoflow.core.errors import CheckpointError, DataError
from histoflow.models.encoder_backbone import build_architecture, file_sha256
from histoflow.models.encoders import get_encoder_spec


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """Two 672x896 px slides at 0.5 um/px: 3 x 4 grids of 224 px tiles."""
    from histoflow.slide.montage import write_pyramid_tiff
    from tests.predict.test_slide import PATTERN, pattern_image

    root = tmp_path_factory.mktemp("slides")
    return [
        write_pyramid_tiff(
            root / f"s{i}.tif", pattern_image(np.roll(PATTERN, i, 1), px=112), mpp=0.5, tile_px=224, min_level_px=128
        )
        for i in range(2)
    ]


def _embed(args, expect=0):
    res = CliRunner().invoke(app, ["--quiet", "embed", *map(str, args)])
    assert res.exit_code == expect, res.output
    return res


def test_embed_with_an_encoder_records_it_and_resumes(tmp_path, slides, monkeypatch):
    spec = get_encoder_spec("vit-s16-imagenet")
    torch.manual_seed(3)
    torch.save(build_architecture(spec).state_dict(), tmp_path / "pytorch_model.bin")
    args = [*slides, "--encoder", spec.name, "--weights", tmp_path / "pytorch_model.bin", "--out", tmp_path / "emb"]
    _embed(args)
    rep = json.loads((tmp_path / "emb" / "s0" / "embed.json").read_text())
    assert rep["encoder"] == "vit-s16-imagenet" and rep["weights_sha256"] == file_sha256(tmp_path / "pytorch_model.bin")
    assert (rep["tile_px"], rep["mpp"], rep["features"], rep["status"]) == (224, 0.5, 384, "complete")
    e = np.load(tmp_path / "emb" / "s0" / "embeddings.npy")
    assert e.shape == (rep["tiles"], 384) and rep["tiles"] > 0 and np.isfinite(e).all()
    assert json.loads(_embed(args).output)["resumed"] == ["s0", "s1"]
    # another tile grid is another embedding too, and so is another resampling of the pixels
    assert json.loads(_embed([*args, "--tissue-threshold", "0"]).output)["resumed"] == []
    assert json.loads(_embed([*args, "--tissue-threshold", "0"]).output)["resumed"] == ["s0", "s1"]
    monkeypatch.setattr("histoflow.predict.slide.PIXELS_VERSION", -1)
    assert json.loads(_embed([*args, "--tissue-threshold", "0"]).output)["resumed"] == []
    # other weights are another embedding: nothing resumes
    torch.save(build_architecture(spec).state_dict(), tmp_path / "other.bin")
    args[args.index(tmp_path / "pytorch_model.bin")] = tmp_path / "other.bin"
    assert json.loads(_embed(args).output)["resumed"] == []


def test_embed_refuses_bad_input_clearly(tmp_path, slides):
    out = ["--out", tmp_path / "o"]
    res = _embed([slides[0], "--encoder", "unii", "--weights", "random", *out], expect=2)
    assert "unknown encoder 'unii'" in res.output and "Did you mean 'uni'" in res.output
    res = _embed([slides[0], "--encoder", "uni", "--mpp", "1", "--resolution-policy", "refuse", *out], expect=2)
    assert "not trained on 1 um/px (trained at 0.5 um/px" in res.output
    res = _embed([slides[0], "--encoder", "h-optimus-0", "--tile-px", "256", "--weights", "random", *out], expect=2)
    assert "only accepts 224 px tiles" in res.output
    res = _embed([slides[0], *out], expect=2)
    assert "either --checkpoint or --encoder" in res.output
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "resnet_bits.bin")
    res = _embed(
        [slides[0], "--encoder", "vit-s16-imagenet", "--weights", tmp_path / "resnet_bits.bin", *out], expect=2
    )
    assert "not the weights of encoder 'vit-s16-imagenet'" in res.output and "unexpected" in res.output


def _labels(path, ids):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["bag_id", "label", "patient", "split"])
        for i, s in enumerate(ids):
            w.writerow([s, i % 2, f"p{i}", "train"])


def test_train_mil_refuses_mixed_encoders_and_records_the_one_it_used(tmp_path, slides):
    from histoflow.mil.train import load_mil_config, train_mil

    emb = tmp_path / "emb"
    _embed([slides[0], "--encoder", "vit-s16-imagenet", "--weights", "random", "--out", emb])
    _embed([slides[1], "--encoder", "resnet50-trunc", "--weights", "random", "--out", emb])
    _labels(tmp_path / "labels.csv", ["s0", "s1"])
    sets = [f"data.embeddings={emb}", f"data.labels={tmp_path / 'labels.csv'}", "train.epochs=1"]
    with pytest.raises(
        DataError,
        match=r"embedded differently: s0 with encoder 'vit-s16-imagenet' \(weights random\)"
        r", 224 px at 0.5 um/px, s1 with encoder 'resnet50-trunc'",
    ):
        train_mil(load_mil_config(None, sets), tmp_path / "run")
    # one encoder for both: trains, and the MIL checkpoint says which encoder it needs
    _embed([slides[1], "--encoder", "vit-s16-imagenet", "--weights", "random", "--out", tmp_path / "emb2"])
    _embed([slides[0], "--encoder", "vit-s16-imagenet", "--weights", "random", "--out", tmp_path / "emb2"])
    sets[0] = f"data.embeddings={tmp_path / 'emb2'}"
    train_mil(load_mil_config(None, sets), tmp_path / "run")
    from histoflow.mil.apply import MilAggregator

    agg = MilAggregator.load(tmp_path / "run" / "mil.pt")
    assert agg.meta["embedding"] == {
        "encoder": "vit-s16-imagenet",
        "weights_sha256": "random",
        "tile_px": 224,
        "mpp": 0.5,
    }
    with pytest.raises(CheckpointError, match="trained on embeddings of encoder 'vit-s16-imagenet'"):
        agg.check_backbone("0123456789abcdef")


def test_predict_mil_scores_encoder_embeddings_and_refuses_another_encoder(tmp_path, slides):
    """embed --encoder -> train-mil -> predict-mil: the MIL model scores the stored embeddings
    as train-mil's own evaluation does, and slides embedded otherwise are refused by name."""
    from histoflow.mil.train import load_mil_config, train_mil

    spec = get_encoder_spec("vit-s16-imagenet")
    torch.manual_seed(5)
    torch.save(build_architecture(spec).state_dict(), tmp_path / "vit.bin")
    emb = tmp_path / "emb"
    _embed([*slides, "--encoder", spec.name, "--weights", tmp_path / "vit.bin", "--out", emb])
    _labels(tmp_path / "labels.csv", ["s0", "s1"])
    sets = [f"data.embeddings={emb}", f"data.labels={tmp_path / 'labels.csv'}", "train.epochs=2"]
    train_mil(load_mil_config(None, sets), tmp_path / "run")

    res = CliRunner().invoke(
        app, ["--quiet", "predict-mil", str(emb), "--mil-checkpoint", str(tmp_path / "run" / "mil.pt"),
              "--out", str(tmp_path / "pred")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    import pandas as pd

    table = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    trained = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype={"id": str}).set_index("id")
    for row in table.itertuples():  # the scores train-mil gave the same bags with the model it saved
        assert row.score == pytest.approx(trained.loc[row.slide, "score"], abs=1e-5)
        assert str(row.prediction) == str(trained.loc[row.slide, "prediction"])
        attention = __import__("pandas").read_parquet(tmp_path / "pred" / row.slide / "attention.parquet")
        assert len(attention) == row.tiles and attention["attention"].sum() == pytest.approx(1.0, abs=1e-4)
    assert sorted(table["slide"]) == ["s0", "s1"]

    _embed([slides[0], "--encoder", "resnet50-trunc", "--weights", "random", "--out", tmp_path / "other"])
    res = CliRunner().invoke(
        app, ["predict-mil", str(tmp_path / "other"), "--mil-checkpoint", str(tmp_path / "run" / "mil.pt"),
              "--out", str(tmp_path / "p2")],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "slide s0" in res.output and "encoder 'resnet50-trunc'" in res.output
