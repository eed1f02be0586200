"""Encoder registry: every timm encoder builds with its model card's kwargs (giant ones on the meta
device, nothing allocated) and gives the registered output size; weights load strictly from files
with the exact key layout (small entries for real, giant ones by comparing key sets on meta);
wrong files, unknown names and resolutions the encoder was not trained on are explained."""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from histoflow.config import ModelConfig
from histoflow.core.errors import CheckpointError, ConfigError
from histoflow.models import create_model
from histoflow.models.encoder_backbone import (
    EncoderBackbone,
    build_architecture,
    build_encoder,
    check_state_dict,
    shapes_of,
)
from histoflow.models.encoders import check_resolution, encoder_names, get_encoder_spec

TIMM_ENCODERS = [n for n in encoder_names() if get_encoder_spec(n).library == "timm"]
# parameters the model cards / papers state (millions), to catch a wrong kwarg that still builds
PARAMS_M = {"uni": 303, "uni2-h": 681, "virchow": 631, "virchow2": 631, "h-optimus-0": 1135, "h-optimus-1": 1135}
PARAMS_M |= {"prov-gigapath": 1135, "resnet50-trunc": 8.5, "vit-s16-imagenet": 21.7}


def _meta_backbone(name: str) -> EncoderBackbone:
    spec = get_encoder_spec(name)
    return EncoderBackbone(spec, build_architecture(spec, "meta"))


@pytest.mark.parametrize("name", TIMM_ENCODERS)
def test_each_timm_encoder_builds_with_its_card_kwargs_and_gives_its_dim(name):
    spec = get_encoder_spec(name)
    backbone = _meta_backbone(name)
    with torch.device("meta"):
        out = backbone(torch.zeros(2, 3, spec.tile_px, spec.tile_px))
    assert tuple(out.shape) == (2, spec.dim) and backbone.num_features == spec.dim
    n = sum(p.numel() for p in backbone.parameters()) / 1e6
    assert n == pytest.approx(PARAMS_M[name], rel=0.02)


def test_pooling_and_prefix_tokens_as_the_cards_say():
    virchow2 = _meta_backbone("virchow2")
    assert virchow2.prefix_tokens == 5  # class token + 4 registers: patch tokens start at index 5
    assert _meta_backbone("virchow").prefix_tokens == 1
    uni2 = get_encoder_spec("uni2-h")
    assert uni2.kwargs["reg_tokens"] == 8 and uni2.kwargs["mlp_layer"] == "timm.layers.SwiGLUPacked"
    assert get_encoder_spec("h-optimus-0").mean == (0.707223, 0.578729, 0.703617)
    assert get_encoder_spec("h-optimus-0").fixed_size and not get_encoder_spec("uni").fixed_size


def test_small_encoder_real_forward_concat_pooling_matches_the_card_recipe():
    """token+patch_mean on a real (small) timm ViT equals the Virchow card's concat by hand."""
    spec = get_encoder_spec("virchow2")
    small = timm.create_model("vit_small_patch16_224", num_classes=0, global_pool="", reg_tokens=4).eval()
    backbone = EncoderBackbone(spec, small)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tokens = small(x)
        want = torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1)
        assert torch.allclose(backbone(x), want)


@pytest.mark.parametrize("suffix", ["pytorch_model.bin", "model.safetensors"])
def test_weights_file_with_the_exact_layout_loads_strictly(tmp_path, suffix):
    from safetensors.torch import save_file

    spec = get_encoder_spec("vit-s16-imagenet")
    torch.manual_seed(1)
    source = build_architecture(spec).eval()
    path = tmp_path / "vit-s16-imagenet" / suffix
    path.parent.mkdir()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(path)) if suffix.endswith("safetensors") else torch.save(state, path)
    backbone, src = build_encoder("vit-s16-imagenet", path)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(backbone.eval()(x), source(x))
    assert src.kind == "file" and len(src.sha256()) == 64
    # a folder as Hugging Face leaves it, and the configured weights folder, find the same file
    assert build_encoder("vit-s16-imagenet", path.parent)[1].path == path


def test_weights_folder_from_the_environment(tmp_path, monkeypatch):
    spec = get_encoder_spec("vit-s16-imagenet")
    (tmp_path / spec.name).mkdir()
    torch.save(build_architecture(spec).state_dict(), tmp_path / spec.name / "pytorch_model.bin")
    monkeypatch.setenv("HISTOFLOW_WEIGHTS", str(tmp_path))
    assert build_encoder(spec.name)[1].path == tmp_path / spec.name / "pytorch_model.bin"
    monkeypatch.setenv("HISTOFLOW_WEIGHTS", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"no weights given \(looked in .*empty/uni/pytorch_model.bin.*--weights"):
        build_encoder("uni")


def test_truncated_resnet_loads_a_full_resnet50_file(tmp_path):
    torch.manual_seed(0)
    full = timm.create_model("resnet50").eval()  # the full ImageNet model, as the hub ships it
    torch.save(full.state_dict(), tmp_path / "pytorch_model.bin")
    backbone, _ = build_encoder("resnet50-trunc", tmp_path / "pytorch_model.bin")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        want = full.layer3(full.layer2(full.layer1(full.maxpool(full.act1(full.bn1(full.conv1(x))))))).mean((2, 3))
        assert torch.allclose(backbone.eval()(x), want, atol=1e-5)


def test_weights_of_another_architecture_name_the_mismatch(tmp_path):
    torch.save(timm.create_model("resnet50").state_dict(), tmp_path / "resnet.bin")
    with pytest.raises(CheckpointError) as err:
        build_encoder("vit-s16-imagenet", tmp_path / "resnet.bin")
    msg = str(err.value)
    assert "resnet.bin: not the weights of encoder 'vit-s16-imagenet' (vit_small_patch16_224)" in msg
    assert "missing (e.g." in msg and "unexpected (e.g." in msg and "model.safetensors" in msg
    # same keys, other shapes: a ViT-Ti file for the ViT-S entry
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0).state_dict(), tmp_path / "tiny.bin")
    with pytest.raises(
        CheckpointError, match=r"150 shape mismatches \(e.g. blocks.0.attn.proj.bias: file \(192,\) vs model \(384,\)"
    ):
        build_encoder("vit-s16-imagenet", tmp_path / "tiny.bin")
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.bin: not a readable weights file"):
        build_encoder("vit-s16-imagenet", tmp_path / "junk.bin")
    with pytest.raises(CheckpointError, match="missing.bin: weights file for encoder 'uni' not found"):
        build_encoder("uni", tmp_path / "missing.bin")


# (blocks, width, patch, register tokens, position embeddings) as the model cards describe them:
# UNI a ViT-L/16 at 224 px; UNI2-h a ViT-H/14 with 8 register tokens; Virchow a ViT-H/14 of
# width 1280; H-optimus-0 a ViT-g/14 with 4 register tokens (UNI2-h's and H-optimus-0's
# position embeddings skip the class token).
CARD_LAYOUTS = {
    "uni": (24, 1024, 16, 0, 197),
    "uni2-h": (24, 1536, 14, 8, 256),
    "virchow": (32, 1280, 14, 0, 257),
    "h-optimus-0": (40, 1536, 14, 4, 256),
}


def test_giant_key_layouts_checked_without_allocating():
    """Each giant, built on the meta device, has its card's layout; UNI's file is refused for
    UNI2-h and H-optimus-0's for Virchow, naming what differs."""
    layouts = {n: shapes_of(_meta_backbone(n).model.state_dict()) for n in CARD_LAYOUTS}
    for name, (blocks, width, patch, registers, positions) in CARD_LAYOUTS.items():
        shapes = layouts[name]
        assert len({k.split(".")[1] for k in shapes if k.startswith("blocks.")}) == blocks, name
        assert shapes["patch_embed.proj.weight"] == (width, 3, patch, patch), name
        assert shapes.get("reg_token", (1, 0, width))[1] == registers, name
        assert shapes["pos_embed"] == (1, positions, width), name
        check_state_dict(get_encoder_spec(name), shapes, shapes, f"{name}.bin")  # its own layout loads
    with pytest.raises(CheckpointError, match=r"uni\.bin: not the weights of encoder 'uni2-h'.*missing.*reg_token"):
        check_state_dict(get_encoder_spec("uni2-h"), layouts["uni"], layouts["uni2-h"], "uni.bin")
    with pytest.raises(CheckpointError, match="shape mismatches.*hf-hub:paige-ai/Virchow"):
        check_state_dict(get_encoder_spec("virchow"), layouts["h-optimus-0"], layouts["virchow"], "h0.bin")


def test_unknown_encoder_lists_the_known_ones_and_the_closest():
    with pytest.raises(
        ConfigError, match=r"unknown encoder 'virchow3'. Did you mean 'virchow' or 'virchow2'\? Known encoders: uni,"
    ):
        get_encoder_spec("virchow3")


def test_resolution_policy_warns_or_refuses(caplog):
    uni, h0 = get_encoder_spec("uni"), get_encoder_spec("h-optimus-0")
    assert check_resolution(uni, 224, 0.499) == []  # scanner rounding, not another magnification
    with caplog.at_level(logging.WARNING):
        assert check_resolution(uni, 256, 1.0) == [
            "tiles of 256 px (trained on 224 px)",
            "1 um/px (trained at 0.5 um/px, 20x)",
        ]
    assert "encoder 'uni' was not trained on" in caplog.text
    with pytest.raises(ConfigError, match="not trained on 1 um/px.*--resolution-policy warn"):
        check_resolution(uni, 224, 1.0, "refuse")
    with pytest.raises(ConfigError, match="only accepts 224 px tiles, got 256"):
        check_resolution(h0, 256, 0.5, "warn")
    with pytest.raises(ConfigError, match="'warn' or 'refuse'"):
        check_resolution(uni, 224, 0.5, "ignore")


def test_encoders_outside_timm_refuse_naming_their_package():
    for name, package in (("conch", "CONCH.git"), ("phikon-v2", "transformers")):
        spec = get_encoder_spec(name)
        mod = "conch" if name == "conch" else "transformers"
        try:
            __import__(mod)
        except ImportError:
            with pytest.raises(ConfigError, match=f"not.*timm.*pip install .*{package}"):
                create_model(ModelConfig(name=name, weights="random"), 2)
        assert spec.dim == {"conch": 512, "phikon-v2": 1024}[name]


def test_encoder_as_a_train_backbone_with_its_own_normalisation_and_strict_weights(tmp_path):
    spec = get_encoder_spec("vit-s16-imagenet")
    torch.save(build_architecture(spec).state_dict(), tmp_path / "w.bin")
    model = create_model(ModelConfig(name=spec.name, weights=str(tmp_path / "w.bin")), 3, mean=(0.1,) * 3, std=(1,) * 3)
    assert model.preprocess.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert model(torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)).shape == (1, 3)
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.bin")
    with pytest.raises(CheckpointError, match="not the weights of encoder 'vit-s16-imagenet'"):
        create_model(ModelConfig(name=spec.name, weights=str(tmp_path / "r18.bin")), 2)
    with pytest.raises(ConfigError, match="takes no model.params"):
        create_model(ModelConfig(name=spec.name, params={"depth": 3}), 2)


def test_histoflow_checkpoint_of_an_encoder_classifier_round_trips(tmp_path):
    from histoflow.checkpoint import load_checkpoint, save_checkpoint

    cfg = ModelConfig(name="vit-s16-imagenet")
    model = create_model(cfg, 2).eval()
    path = save_checkpoint(
        tmp_path / "m.pt", model, model_config=cfg.model_dump(), class_names=["a", "b"], image_px=224
    )
    again, _ = load_checkpoint(path)
    x = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    # its backbone can start an encoder again (`model.weights: m.pt`)
    backbone, _ = build_encoder("vit-s16-imagenet", path)
    with torch.no_grad():
        assert torch.equal(backbone.eval()(again.preprocess(x)), again.features(x))


def test_hub_weights_offline_fail_fast_naming_the_file_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"cannot download hf-hub:MahmoodLab/uni .*Download pytorch_model.bin from"):
        build_encoder("uni", "hub")


def test_train_preflight_takes_an_encoders_weight_keywords_not_as_paths():
    from histoflow.config.run import RunConfig
    from histoflow.train.preflight import config_problems

    for keyword in ("random", "hub"):
        cfg = RunConfig(model={"name": "vit-s16-imagenet", "weights": keyword})
        assert not [p for p in config_problems(cfg, data_given=True) if p.startswith("model.weights")]
    cfg = RunConfig(model={"name": "simple_cnn", "weights": "random"})  # not an encoder: a missing file
    assert any("model.weights: random does not exist" in p for p in config_problems(cfg, data_given=True))
