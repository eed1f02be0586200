"""Model registry, timm backbones, concat ensemble, local weights and freeze policies."""

from __future__ import annotations

import pytest
import torch

from histoflow.config import ModelConfig
from histoflow.core.errors import CheckpointError, ConfigError
from histoflow.models import create_model, list_models, register_model
from histoflow.models.factory import set_backbone_trainable, trainable_parameters

X = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)


def test_builtin_models_listed_and_duplicates_refused():
    names = list_models()
    assert {"simple_cnn", "logistic_regression", "concat"} <= set(names)
    with pytest.raises(ValueError, match="already registered"):
        register_model("simple_cnn")(lambda **_: None)


def test_unknown_model_lists_closest_names():
    with pytest.raises(ConfigError, match=r"unknown model 'densenet12'.*densenet121"):
        create_model("densenet12", 2)


@pytest.mark.parametrize(
    "name,classes,outputs",
    [
        ("simple_cnn", 2, 1),
        ("simple_cnn", 4, 4),
        ("resnet18", 3, 3),
        ("densenet121", 2, 1),
        ("logistic_regression", 2, 1),
    ],
)
def test_forward_shapes_and_gradcam_layer(name, classes, outputs):
    model = create_model(name, classes).eval()
    logits = model(X)
    assert logits.shape == (2, outputs)
    probs = model.probabilities(logits)
    assert probs.shape == (2, classes) and torch.allclose(probs.sum(1), torch.ones(2))
    assert isinstance(model.gradcam_layer, torch.nn.Module)


def test_concat_ensemble_concatenates_features():
    cfg = ModelConfig(
        name="concat",
        params={"backbones": ["resnet18", "simple_cnn"], "member_params": {"simple_cnn": {"widths": [8, 16]}}},
    )
    model = create_model(cfg, 2).eval()
    assert model.backbone.num_features == 512 + 16
    assert model(X).shape == (2, 1)
    with pytest.raises(ConfigError, match="at least two"):
        create_model(ModelConfig(name="concat", params={"backbones": ["resnet18"]}), 2)


def test_local_timm_state_dict_loads_into_backbone(tmp_path):
    import timm

    source = timm.create_model("resnet18", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "resnet18_imagenet.pth")  # as a user would download once
    model = create_model(ModelConfig(name="resnet18", weights=str(tmp_path / "resnet18_imagenet.pth")), 2)
    assert torch.equal(model.backbone.model.conv1.weight, source.conv1.weight)
    with pytest.raises(CheckpointError, match="no tensor matches"):
        create_model(ModelConfig(name="simple_cnn", weights=str(tmp_path / "resnet18_imagenet.pth")), 2)
    with pytest.raises(CheckpointError, match="weights file not found"):
        create_model(ModelConfig(name="resnet18", weights=str(tmp_path / "missing.pth")), 2)


def test_pretrained_offline_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="cannot load pretrained weights.*model.weights: PATH"):
        create_model(ModelConfig(name="resnet18", pretrained=True), 2)


def test_freeze_backbone_leaves_only_head_trainable():
    model = create_model("resnet18", 2)
    set_backbone_trainable(model, False)
    assert trainable_parameters(model) == 512 + 1
    set_backbone_trainable(model, True)
    assert trainable_parameters(model) > 11_000_000


def test_pool_first_matches_pool_last_when_bn_scale_is_positive():
    """conv-pool-BN-ReLU computes what conv-BN-ReLU-pool does (max-pool commutes with a
    monotonic map), on a quarter of the pixels."""
    from histoflow.models.baselines import SimpleCNN

    torch.manual_seed(0)
    last, first = SimpleCNN((8, 16, 32), 1), SimpleCNN((8, 16, 32), 1, pool_first=True)
    assert [type(m).__name__ for m in first.body][:4] == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU"]
    for bn in (m for m in last.body if isinstance(m, torch.nn.BatchNorm2d)):
        bn.weight.data.uniform_(0.5, 2.0)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
    first.load_state_dict({k: v for k, v in zip(first.state_dict(), last.state_dict().values())})
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(first.eval()(x), last.eval()(x), atol=1e-5)


def test_simple_cnn_depth_per_stage():
    from histoflow.models.baselines import SimpleCNN

    model = SimpleCNN((8, 16, 32), [1, 1, 2], pool_first=True)
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 32]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    built = create_model(ModelConfig(name="simple_cnn", params={"widths": [8, 16, 32], "depth": [1, 1, 2]}), 2)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in built.backbone.body) == 4
    with pytest.raises(ConfigError, match="one depth >= 1 per stage"):
        SimpleCNN((8, 16, 32), [1, 2])
