"""Grad-CAM / Grad-CAM++ for every registered model, checked against a hand-computed Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from histoflow.checkpoint import save_checkpoint
from histoflow.config import ModelConfig
from histoflow.core.errors import ConfigError, DataError
from histoflow.data.transforms import dihedral_views
from histoflow.evaluate.gradcam import (
    DIHEDRAL,
    dihedral_view,
    explain_images,
    pick_gallery,
    tta_cams,
    undo_dihedral_view,
)
from histoflow.models.factory import create_model, list_models
from tests.conftest import need_data

SMALL = {  # the registry's models, sized for a CPU test; timm's test_* stand for "any timm name"
    "simple_cnn": {"widths": [8, 16]},
    "concat": {"backbones": ["simple_cnn", "test_resnet"], "member_params": {"simple_cnn": {"widths": [8, 16]}}},
    "test_resnet": {},  # CNN, feature_info stages
    "test_convnext": {},
    "test_vit": {"img_size": 64},  # tokens, not maps: reshaped by the ViT adapter
}
TIMM = ("test_resnet", "test_convnext", "test_vit")


def _images(n=3, px=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, px, px, 3), dtype=np.uint8)


def _encoders() -> set[str]:
    from histoflow.models.encoders import encoder_names

    return set(encoder_names())


@pytest.mark.parametrize("name", sorted((set(list_models()) - _encoders()) | set(TIMM)))
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_every_model_is_explained_or_says_why(name, method):
    torch.manual_seed(0)
    model = create_model(ModelConfig(name=name, params=SMALL.get(name, {})), 2)
    if name == "logistic_regression":  # colour histograms: no spatial map to explain
        with pytest.raises(ConfigError, match="no spatial feature map"):
            explain_images(model, _images(), method=method)
        return
    cams = explain_images(model, _images(), method=method)
    assert cams.shape == (3, 64, 64) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert np.isfinite(cams).all()
    # a map, not a constant (an all-zero map is a legitimate Grad-CAM answer for one random-weight image)
    assert (cams.reshape(3, -1).std(1) > 0).any()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_a_foundation_encoder_backbone_is_explained_at_its_tile_size(method):
    """Encoders as `model.name` (here the ViT-S/16 baseline, random weights) are ViTs with a fixed
    224 px input: Grad-CAM maps their patch tokens back to the image. The giant encoders share the
    adapter; building them for real here would take gigabytes (tests/models/test_encoders.py
    builds them on the meta device); the encoders outside timm say which package they need."""
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="vit-s16-imagenet"), 2)
    cams = explain_images(model, _images(n=2, px=224), method=method)
    assert cams.shape == (2, 224, 224) and np.isfinite(cams).all() and (cams.reshape(2, -1).std(1) > 0).all()
    import importlib.util

    for name, module, package in (("conch", "conch", "CONCH"), ("phikon-v2", "transformers", "transformers")):
        # with the package installed, the refusal is of random weights instead (no weights given)
        expected = "random weights are not supported" if importlib.util.find_spec(module) else package
        with pytest.raises(ConfigError, match=expected):
            create_model(ModelConfig(name=name), 2)


def _manual_gradcam(model, images, cls):
    """Grad-CAM by the paper's formula with plain autograd hooks."""
    store = {}
    layer = model.gradcam_layer
    h = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    logits = model(x)
    h.remove()
    target = (logits[:, 0] if cls == 1 else -logits[:, 0]).sum()
    grads = torch.autograd.grad(target, store["a"])[0]
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=images.shape[1:3], mode="bilinear").squeeze(1).detach().numpy()
    lo, hi = cam.min((1, 2), keepdims=True), cam.max((1, 2), keepdims=True)
    return (cam - lo) / (hi - lo + 1e-7)


@pytest.mark.parametrize("cls", [0, 1])
def test_matches_hand_computed_gradcam_for_both_binary_classes(cls):
    torch.manual_seed(1)
    model = create_model(ModelConfig(name="simple_cnn", params={"widths": [8, 16]}), 2).eval()
    # the target ReLU is in-place: run the reference on a copy whose ReLUs are not
    ref = create_model(ModelConfig(name="simple_cnn", params={"widths": [8, 16]}), 2).eval()
    ref.load_state_dict(model.state_dict())
    for m in ref.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    images = _images(2, 32, seed=3)
    ours = explain_images(model, images, classes=[cls, cls])
    expected = _manual_gradcam(ref, images, cls)
    # pytorch-grad-cam resizes with OpenCV, the reference with torch: compare the maps' layout
    for a, b in zip(ours, expected):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def test_explain_after_inference_mode_prediction():
    from histoflow.predict.patches import predict_batches

    model = create_model(ModelConfig(name="simple_cnn", params={"widths": [8, 16]}), 2)
    images = _images(4, 32)
    loader = [(torch.from_numpy(images).permute(0, 3, 1, 2), torch.zeros(4))]
    predict_batches(model, loader, device=torch.device("cpu"))  # leaves inference tensors behind
    assert explain_images(model, images).shape == (4, 32, 32)


def test_bad_inputs():
    model = create_model(ModelConfig(name="simple_cnn", params={"widths": [8]}), 2)
    with pytest.raises(ConfigError, match="gradcam"):
        explain_images(model, _images(), method="lime")
    with pytest.raises(DataError, match="uint8"):
        explain_images(model, _images().astype(np.float32))
    with pytest.raises(DataError, match="no predictions"):
        pick_gallery(np.zeros(0, int), np.zeros((0, 2)), 8)


def test_pick_gallery_takes_the_most_confident_of_each_category():
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    p = np.array([0.99, 0.7, 0.9, 0.6, 0.1, 0.05, 0.3, 0.4])
    picked = pick_gallery(y, np.stack([1 - p, p], 1), n=4)
    assert picked == [("true positive", 0), ("false positive", 2), ("false negative", 4), ("true negative", 5)]
    multi = pick_gallery(np.array([0, 1, 2]), np.eye(3)[[0, 2, 2]] * 0.8 + 0.2 / 3, n=4)
    assert {c for c, _ in multi} == {"correct", "wrong"}


def test_explain_cli_on_real_pcam(tmp_path):

    from histoflow.cli import app

    data = need_data("pcam", "valid")
    csv = tmp_path / "m.csv"
    rows = [f"{p},{p.parent.name}" for label in ("0", "1") for p in sorted((data / label).glob("*.jpg"))[:6]]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    torch.manual_seed(0)
    cfg = ModelConfig(name="simple_cnn", params={"widths": [8, 16]})
    model = create_model(cfg, 2)
    ckpt = save_checkpoint(
        tmp_path / "best.pt", model, model_config=cfg.model_dump(mode="json"), class_names=["0", "1"], image_px=48
    )
    out = tmp_path / "explain"
    result = CliRunner().invoke(
        app,
        [
            "explain",
            "--checkpoint",
            str(ckpt),
            str(csv),
            "--n",
            "8",
            "--out",
            str(out),
            "--method",
            "gradcam++",
        ],
    )
    assert result.exit_code == 0, result.output
    import pandas as pd

    gallery = pd.read_csv(out / "gallery.csv")
    assert 1 <= len(gallery) <= 8 and set(gallery["category"]) <= {
        "true positive",
        "false positive",
        "false negative",
        "true negative",
    }
    assert gallery["path"].str.endswith(".jpg").all() and gallery["probability"].between(0, 1).all()
    from PIL import Image

    assert Image.open(out / "gallery.png").size[0] > 400
    assert len(list((out / "cams").glob("*.png"))) == len(gallery)
    assert not gallery["tta"].any()
    # --tta: the cases carry the 8-view probability `predict --tta` gives (and evaluate --tta scores)
    tta_out, preds = tmp_path / "explain_tta", tmp_path / "p.csv"
    args = ["--checkpoint", str(ckpt), str(csv), "--n", "8", "--out", str(tta_out), "--batch-size", "4"]
    result = CliRunner().invoke(app, ["explain", *args, "--tta", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    predicted = CliRunner().invoke(app, ["predict", "--checkpoint", str(ckpt), str(csv), "--tta", "--out", str(preds)])
    assert predicted.exit_code == 0, predicted.output
    tta_gallery = pd.read_csv(tta_out / "gallery.csv").merge(pd.read_csv(preds), on="path")
    assert tta_gallery["tta"].all() and len(tta_gallery) == len(pd.read_csv(tta_out / "gallery.csv"))
    np.testing.assert_allclose(tta_gallery["probability"], tta_gallery["p_1"], atol=1e-3)
    # a class the model does not know: an error naming the file, exit code 2
    csv.write_text("path,label\n" + rows[0].rsplit(",", 1)[0] + ",2\n" + rows[-1] + "\n")
    bad = CliRunner().invoke(app, ["explain", "--checkpoint", str(ckpt), str(csv), "--out", str(out)])
    assert bad.exit_code == 2 and "not known to the model" in bad.output


def test_dihedral_views_are_tta_views_and_map_back():
    images = _images(n=2, px=8)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    for (flip, k), view in zip(DIHEDRAL, dihedral_views(batch), strict=True):
        np.testing.assert_array_equal(dihedral_view(images, flip, k), view.permute(0, 2, 3, 1).numpy())
        maps = images[..., 0]
        np.testing.assert_array_equal(undo_dihedral_view(dihedral_view(maps, flip, k), flip, k), maps)


def _red(images: np.ndarray) -> np.ndarray:
    """A stand-in for Grad-CAM that turns with the image: the red channel, rescaled to [0, 1]."""
    red = images[..., 0].astype(np.float32)
    low, high = red.min(axis=(1, 2), keepdims=True), red.max(axis=(1, 2), keepdims=True)
    return (red - low) / (high - low)


def test_cam_of_a_turned_image_maps_back_and_tta_cams_average_them():
    images = _images(n=3, px=16, seed=1)  # asymmetric: a map left turned would not match
    for flip, k in DIHEDRAL[1:]:
        turned = _red(dihedral_view(images, flip, k))
        assert not np.allclose(turned, _red(images))
        np.testing.assert_allclose(undo_dihedral_view(turned, flip, k), _red(images))
    np.testing.assert_allclose(tta_cams(_red, images), _red(images), atol=1e-6)
    non_square = _images(n=1, px=16)[:, :12]  # quarter turns swap height and width; mapped back
    assert tta_cams(_red, non_square).shape == (1, 12, 16)


def test_tta_cams_of_a_real_model_are_maps_in_0_1():
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="simple_cnn", params={"widths": [8, 16]}), 2)
    images = _images(n=2, px=32)
    cams = tta_cams(lambda views: explain_images(model, views, classes=[1, 0]), images)
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and np.isclose(cams.max(), 1)
