"""Attention MIL: the model's heads, patient-grouped splits, bags from real PCam patches, training
on synthetic and real bags (bag metrics and attention vs instance labels), and the MIL aggregator
inside predict-slide."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from histoflow.config.slides import BagConfig
from histoflow.core.errors import CheckpointError, DataError
from histoflow.mil.bags import build_pcam_bags, grade_of, plan_bags
from histoflow.mil.model import GatedAttentionMIL, load_mil, predict_bag, save_mil
from histoflow.mil.train import load_mil_config, split_groups, train_mil
from tests.conftest import need_data


@pytest.mark.parametrize("task,classes", [("binary", 2), ("multiclass", 4), ("ordinal", 3)])
def test_heads_give_probabilities_and_attention(task, classes):
    torch.manual_seed(0)
    m = GatedAttentionMIL(16, classes, task, hidden=8, attention=4)
    out, a = m(torch.randn(7, 16))
    assert a.shape == (7,) and float(a.detach().sum()) == pytest.approx(1, abs=1e-5)
    p = m.probabilities(out).detach()
    assert p.shape == (classes,) and float(p.sum()) == pytest.approx(1, abs=1e-5) and (p >= 0).all()
    assert float(m.loss(out, classes - 1).detach()) > 0
    if task == "ordinal":
        with torch.no_grad():
            m.gaps.fill_(-50.0)  # even collapsed gaps keep the thresholds strictly ordered
        assert (m.thresholds().diff() > 0).all()


def test_split_keeps_patients_whole():
    y = np.array([0, 1] * 30)
    groups = np.repeat(np.arange(15), 4)
    split = split_groups(y, groups, 0.2, 0.2, seed=0)
    for g in range(15):
        assert len(set(split[groups == g])) == 1
    assert {"train", "val", "test"} == set(split)
    with pytest.raises(DataError, match="too few"):
        split_groups(y[:8], groups[:8], 0.2, 0.2, seed=0)


def test_bag_recipes_are_labelled_by_their_contents():
    labels = np.array([1] * 200 + [0] * 400)
    cfg = BagConfig(patients=5, bags_per_patient=6, bag_size=16, k=2, seed=1)
    bags = plan_bags(labels, cfg)
    assert len(bags) == 30
    pools: dict = {}
    for b in bags:
        n_t = int(labels[b["indices"]].sum())
        assert n_t == b["n_tumour"] and b["label"] == int(n_t >= 2) and b["grade"] == grade_of(n_t / 16)
        pools.setdefault(b["patient"], set()).update(b["indices"].tolist())
    assert sum(len(p) for p in pools.values()) == len(set().union(*pools.values()))  # disjoint patients
    assert {b["label"] for b in bags} == {0, 1}
    assert [b["indices"].tolist() for b in plan_bags(labels, cfg)] == [b["indices"].tolist() for b in bags]


def _write_bags(root, bags):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "bags.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["bag_id", "patient", "label", "grade"])
        for b in bags:
            w.writerow([b["id"], b["patient"], b["label"], b["grade"]])
            (root / b["id"]).mkdir(exist_ok=True)
            np.save(root / b["id"] / "embeddings.npy", b["x"])
            np.save(root / b["id"] / "instance_labels.npy", b["inst"])


def _synthetic_bags(n_bags=60, size=12, dim=8, seed=0):
    """Gaussian instances; 'tumour' instances shifted along one direction the model must find."""
    rng = np.random.default_rng(seed)
    bags = []
    for i in range(n_bags):
        n_t = int(rng.integers(0, 2)) if i % 2 == 0 else int(rng.integers(2, 7))
        inst = rng.permutation(np.array([1] * n_t + [0] * (size - n_t)))
        x = rng.normal(size=(size, dim)).astype(np.float32)
        x[:, 0] += 2.5 * inst
        bags.append(
            {
                "id": f"b{i:03d}",
                "patient": f"p{i // 4:02d}",
                "label": int(n_t >= 2),
                "grade": grade_of(n_t / size),
                "x": x,
                "inst": inst.astype(np.int8),
            }
        )
    return bags


def test_train_mil_learns_synthetic_bags_and_attends_to_positives(tmp_path):
    _write_bags(tmp_path / "bags", _synthetic_bags())
    cfg = load_mil_config(
        None,
        [
            f"data.embeddings={tmp_path / 'bags'}",
            f"data.labels={tmp_path / 'bags' / 'bags.csv'}",
            "model.hidden=16",
            "model.attention=8",
            "train.epochs=12",
            "train.lr=0.003",
            f"out={tmp_path / 'run'}",
        ],
    )
    m = train_mil(cfg)
    assert m["test"]["auc"] > 0.8 and m["test"]["attention_auc_mean_per_bag"] > 0.8
    assert set(json.loads((tmp_path / "run" / "metrics.json").read_text())) >= {"train", "val", "test", "patients"}
    model, meta = load_mil(tmp_path / "run" / "mil.pt")
    assert meta["task"] == "binary" and predict_bag(model, _synthetic_bags(1)[0]["x"])["attention"].shape == (12,)
    again = train_mil(cfg)  # seeded: the same data and seed give the same result on CPU
    assert again["test"] == m["test"]


def test_train_mil_ordinal_reports_quadratic_kappa(tmp_path):
    _write_bags(tmp_path / "bags", _synthetic_bags(n_bags=100, seed=1))
    cfg = load_mil_config(
        None,
        [
            f"data.embeddings={tmp_path / 'bags'}",
            f"data.labels={tmp_path / 'bags' / 'bags.csv'}",
            "data.task=ordinal",
            "data.label_column=grade",
            "model.hidden=16",
            "model.attention=8",
            "train.epochs=20",
            "train.lr=0.003",
            f"out={tmp_path / 'run'}",
        ],
    )
    m = train_mil(cfg)
    assert m["classes"] == ["1", "2", "3"] and m["test"]["quadratic_kappa"] > 0.5


def test_missing_embeddings_name_the_bag(tmp_path):
    bags = _synthetic_bags(8)
    _write_bags(tmp_path / "bags", bags)
    (tmp_path / "bags" / "b003" / "embeddings.npy").unlink()
    cfg = load_mil_config(
        None, [f"data.embeddings={tmp_path / 'bags'}", f"data.labels={tmp_path / 'bags' / 'bags.csv'}"]
    )
    with pytest.raises(DataError, match="b003.*histoflow embed"):
        train_mil(cfg)


def _colour_checkpoint(path):
    """A frozen, untrained feature extractor: colour histograms (+ 8x8 thumbnail) of each patch."""
    from histoflow.checkpoint import save_checkpoint
    from histoflow.config import ModelConfig
    from histoflow.models.factory import create_model

    cfg = ModelConfig(name="logistic_regression")
    return save_checkpoint(
        path, create_model(cfg, 2), model_config=cfg.model_dump(), class_names=["0", "1"], image_px=96
    )


@pytest.mark.slow
def test_real_pcam_bags_with_colour_features(tmp_path):
    """Bags of real PCam patches, embedded by colour histograms: MIL beats chance on bags and
    its attention ranks tumour patches above normal ones."""
    pcam = need_data("pcam")
    ckpt = _colour_checkpoint(tmp_path / "colour.pt")
    meta = build_pcam_bags(pcam, tmp_path / "bags", ckpt, BagConfig(patients=20, bags_per_patient=8, bag_size=24, k=2))
    assert meta["bags"] == 160 and meta["embedding"]["features"] > 0
    cfg = load_mil_config(
        None,
        [
            f"data.embeddings={tmp_path / 'bags'}",
            f"data.labels={tmp_path / 'bags' / 'bags.csv'}",
            "train.epochs=15",
            f"out={tmp_path / 'run'}",
        ],
    )
    m = train_mil(cfg)
    assert m["test"]["auc"] > 0.7 and m["test"]["attention_auc_mean_per_bag"] > 0.6


def test_mil_aggregator_in_predict_slide(tmp_path):
    from histoflow.checkpoint import Checkpoint
    from histoflow.config.slides import SlidePredictConfig
    from histoflow.mil.apply import predict_slides_with_mil as predict_slides
    from histoflow.slide.montage import write_pyramid_tiff
    from tests.predict.test_slide import PATTERN, _tiny_checkpoint, pattern_image

    ckpt = _tiny_checkpoint(tmp_path / "m.pt", mpp=1.0)
    slide = write_pyramid_tiff(
        tmp_path / "s.tif",
        pattern_image(np.kron(PATTERN, np.ones((3, 3), int)), px=32),
        mpp=1.0,
        tile_px=64,
        min_level_px=128,
    )
    torch.manual_seed(0)
    mil = GatedAttentionMIL(16, 2, "binary", hidden=8, attention=4)
    fp = Checkpoint.read(ckpt).fingerprint
    save_mil(
        tmp_path / "mil.pt",
        mil,
        in_features=16,
        class_names=["0", "1"],
        model_config={"hidden": 8, "attention": 4, "dropout": 0.25},
        extra={"embedding": {"checkpoint_fingerprint": fp}},
    )
    cfg = SlidePredictConfig(mil_checkpoint=str(tmp_path / "mil.pt"), workers=1)
    s = predict_slides(ckpt, [slide], tmp_path / "out", cfg, progress=False)
    rep = json.loads((tmp_path / "out" / "s" / "slide.json").read_text())
    assert not s["failed"] and rep["score_method"] == "attention_mil" and 0 <= rep["score"] <= 1
    import pyarrow.parquet as pq

    att = pq.read_table(tmp_path / "out" / "s" / "tiles.parquet").column("attention").to_numpy()
    assert att.sum() == pytest.approx(1, abs=1e-4) and (tmp_path / "out" / "s" / "attention.png").exists()
    save_mil(
        tmp_path / "other.pt",
        mil,
        in_features=16,
        class_names=["0", "1"],
        model_config={"hidden": 8, "attention": 4, "dropout": 0.25},
        extra={"embedding": {"checkpoint_fingerprint": "x"}},
    )
    with pytest.raises(CheckpointError, match="another checkpoint"):
        predict_slides(ckpt, [slide], tmp_path / "o2", SlidePredictConfig(mil_checkpoint=str(tmp_path / "other.pt")))


def test_embed_slides_then_train_mil_from_the_cli(tmp_path):
    """`histoflow embed` on slide files (resumable) and `histoflow train-mil` on what it wrote."""
    from typer.testing import CliRunner

    from histoflow.cli import app
    from histoflow.slide.montage import write_pyramid_tiff
    from tests.predict.test_slide import PATTERN, _tiny_checkpoint, pattern_image

    ckpt = _tiny_checkpoint(tmp_path / "m.pt")
    slides = [
        write_pyramid_tiff(
            tmp_path / f"s{i}.tif",
            pattern_image(np.kron(np.roll(PATTERN, i, 1), np.ones((3, 3), int))),
            mpp=1.0,
            tile_px=64,
            min_level_px=128,
        )
        for i in range(2)
    ]
    runner = CliRunner()
    args = [
        "--quiet",
        "embed",
        *map(str, slides),
        "--checkpoint",
        str(ckpt),
        "--out",
        str(tmp_path / "emb"),
        "--mpp",
        "1",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    import pyarrow.parquet as pq

    e = np.load(tmp_path / "emb" / "s0" / "embeddings.npy")
    assert e.shape[1] == 16 and e.shape[0] == pq.read_table(tmp_path / "emb" / "s0" / "tiles.parquet").num_rows > 0
    res = runner.invoke(app, args)
    assert json.loads(res.output)["resumed"] == ["s0", "s1"]
    bags = _synthetic_bags(24)
    _write_bags(tmp_path / "bags", bags)
    res = runner.invoke(
        app,
        [
            "--quiet",
            "train-mil",
            "--set",
            f"data.embeddings={tmp_path / 'bags'}",
            "--set",
            f"data.labels={tmp_path / 'bags' / 'bags.csv'}",
            "--set",
            "train.epochs=2",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "mil.pt").exists() and (tmp_path / "run" / "predictions.csv").exists()
    res = runner.invoke(app, ["train-mil", "--set", "data.embeddings=x", "--set", "data.labels=nope.csv"])
    assert res.exit_code == 2 and "nope.csv" in res.output
