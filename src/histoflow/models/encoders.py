"""Pathology foundation models (and ImageNet baselines) as tile encoders: what each model card says.

Each `EncoderSpec` records, for one published model, the exact architecture and keyword
arguments its model card (or the card's config.json) builds it with, the tiles it was trained
on (size, microns per pixel), its normalisation, how its output is pooled and the output size,
the precision the card runs it in, and the weights file the card names. The builder
(histoflow.models.encoder_backbone) reads nothing else, so a spec here is the whole contract.

Layer classes in kwargs are written by name ("timm.layers.SwiGLUPacked") so a spec stays plain
data, printable in docs and records; `resolve_kwargs` turns them into classes.

Resolution: `tile_px` / `mpp` are what the model was trained on; `check_resolution` warns (or,
with policy "refuse", raises) when asked to embed other tiles. ImageNet models have no mpp:
`mpp` is None and `default_mpp` is only the convention histoflow embeds them at.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from histoflow.core.errors import ConfigError

log = logging.getLogger(__name__)

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# tiles are resampled to the asked mpp, so this only tells a different magnification from rounding
# (0.499 vs 0.5); the same 2% as histoflow.tiling.grid (a sibling package, not importable here)
MPP_TOLERANCE = 0.02
Pooling = Literal["token", "token+patch_mean", "avg", "cls_hidden", "conch"]


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    title: str
    card: str  # model card URL: where every value below comes from
    library: Literal["timm", "conch", "transformers"]
    arch: str  # timm architecture (or the library's model name)
    kwargs: Mapping[str, Any]  # exactly as the card builds it; classes by dotted name
    tile_px: int  # side of the tiles the model was trained on (what it is fed)
    mpp: float | None  # microns per pixel of those tiles; None: not trained on slides (ImageNet)
    magnification: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pooling: Pooling
    dim: int  # output features per tile
    precision: str  # what the card's example runs in
    weights_file: str  # the file the card names
    hub_id: str | None  # timm hub name, for `--weights hub` when online
    default_mpp: float | None = None  # mpp to embed at when the user gives none (default: mpp)
    ignore_keys: tuple[str, ...] = ()  # key prefixes of the weights file the model leaves out
    requires: str | None = None  # pip requirement beyond timm
    notes: str = ""
    baseline: bool = False  # an ImageNet baseline, not a pathology model

    @property
    def embed_mpp(self) -> float | None:
        return self.mpp if self.mpp is not None else self.default_mpp

    @property
    def fixed_size(self) -> bool:
        """True when the model only accepts `tile_px` inputs (timm ViT without dynamic_img_size)."""
        return self.library != "timm" or (
            self.arch.startswith("vit_") and not self.kwargs.get("dynamic_img_size", False)
        )

    def describe(self) -> dict:
        """JSON-friendly summary (docs, embed.json)."""
        return {
            "name": self.name,
            "arch": self.arch,
            "kwargs": dict(self.kwargs),
            "tile_px": self.tile_px,
            "mpp": self.mpp,
            "pooling": self.pooling,
            "dim": self.dim,
            "mean": list(self.mean),
            "std": list(self.std),
            "card": self.card,
        }


SWIGLU = "timm.layers.SwiGLUPacked"
SILU = "torch.nn.SiLU"

_SPECS: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    if spec.name in _SPECS:
        raise ValueError(f"encoder {spec.name!r} is already registered")
    _SPECS[spec.name] = spec
    return spec


def encoder_names() -> list[str]:
    return list(_SPECS)


def is_encoder(name: str) -> bool:
    return name in _SPECS


def get_encoder_spec(name: str) -> EncoderSpec:
    """The spec of `name`; an unknown name lists the known ones and the closest match."""
    if name in _SPECS:
        return _SPECS[name]
    close = difflib.get_close_matches(name.lower(), list(_SPECS), n=3, cutoff=0.4)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown encoder {name!r}.{hint} Known encoders: {', '.join(_SPECS)}.")


def resolve_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Spec kwargs with dotted class names ("torch.nn.SiLU") replaced by the classes."""
    import importlib

    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith(("timm.", "torch.")):
            module, _, attr = value.rpartition(".")
            value = getattr(importlib.import_module(module), attr)
        out[key] = value
    return out


def resolution_problems(spec: EncoderSpec, tile_px: int, mpp: float | None) -> list[str]:
    """What differs from the tiles the encoder was trained on (empty: nothing)."""
    problems = []
    if tile_px != spec.tile_px and not spec.baseline:
        problems.append(f"tiles of {tile_px} px (trained on {spec.tile_px} px)")
    if spec.mpp is not None and mpp is not None and abs(mpp - spec.mpp) / spec.mpp > MPP_TOLERANCE:
        problems.append(f"{mpp:g} um/px (trained at {spec.mpp:g} um/px, {spec.magnification})")
    return problems


def check_resolution(spec: EncoderSpec, tile_px: int, mpp: float | None, policy: str = "warn") -> list[str]:
    """Warn (policy "warn") or refuse ("refuse") tiles the encoder was not trained on. A model
    that only accepts its own input size is refused at any other size whatever the policy."""
    if policy not in ("warn", "refuse"):
        raise ConfigError(f"resolution policy must be 'warn' or 'refuse', got {policy!r}")
    if spec.fixed_size and tile_px != spec.tile_px:
        raise ConfigError(f"encoder {spec.name!r} ({spec.arch}) only accepts {spec.tile_px} px tiles, got {tile_px} px")
    problems = resolution_problems(spec, tile_px, mpp)
    if problems:
        msg = f"encoder {spec.name!r} was not trained on {' at '.join(problems)}"
        if policy == "refuse":
            raise ConfigError(f"{msg}; use --resolution-policy warn to embed anyway")
        log.warning("%s: its features may be worse than the model card reports", msg)
    return problems


# -- the models -------------------------------------------------------------------------------------
# kwargs: the card's `timm.create_model(...)` call, completed by the card's config.json `model_args`
# where the card loads by hub name (Virchow, H-optimus, Prov-GigaPath).
register_encoder(
    EncoderSpec(
        name="uni",
        title="UNI (Mahmood Lab), ViT-L/16",
        card="https://huggingface.co/MahmoodLab/UNI",
        library="timm",
        arch="vit_large_patch16_224",
        kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True},
        tile_px=224,
        mpp=0.5,
        magnification="20x",
        mean=IMAGENET[0],
        std=IMAGENET[1],
        pooling="token",
        dim=1024,
        precision="fp32",
        weights_file="pytorch_model.bin",
        hub_id="hf-hub:MahmoodLab/uni",
    )
)
register_encoder(
    EncoderSpec(
        name="uni2-h",
        title="UNI2-h (Mahmood Lab), ViT-H/14, 8 register tokens",
        card="https://huggingface.co/MahmoodLab/UNI2-h",
        library="timm",
        arch="vit_giant_patch14_224",
        kwargs={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "mlp_layer": SWIGLU,
            "act_layer": SILU,
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
        tile_px=224,
        mpp=0.5,
        magnification="20x",
        mean=IMAGENET[0],
        std=IMAGENET[1],
        pooling="token",
        dim=1536,
        precision="fp32",
        weights_file="pytorch_model.bin",
        hub_id="hf-hub:MahmoodLab/UNI2-h",
    )
)
_VIRCHOW = {
    "img_size": 224,
    "init_values": 1e-5,
    "num_classes": 0,
    "mlp_ratio": 5.3375,
    "global_pool": "",
    "dynamic_img_size": True,
    "mlp_layer": SWIGLU,
    "act_layer": SILU,
}
register_encoder(
    EncoderSpec(
        name="virchow",
        title="Virchow (Paige), ViT-H/14",
        card="https://huggingface.co/paige-ai/Virchow",
        library="timm",
        arch="vit_huge_patch14_224",
        kwargs=_VIRCHOW,
        tile_px=224,
        mpp=0.5,
        magnification="20x",
        mean=IMAGENET[0],
        std=IMAGENET[1],
        pooling="token+patch_mean",
        dim=2560,
        precision="fp16 autocast",
        weights_file="pytorch_model.bin",
        hub_id="hf-hub:paige-ai/Virchow",
        notes="output = concat(class token, mean of the 256 patch tokens)",
    )
)
register_encoder(
    EncoderSpec(
        name="virchow2",
        title="Virchow2 (Paige), ViT-H/14, 4 register tokens",
        card="https://huggingface.co/paige-ai/Virchow2",
        library="timm",
        arch="vit_huge_patch14_224",
        kwargs={**_VIRCHOW, "reg_tokens": 4},
        tile_px=224,
        mpp=0.5,
        magnification="20x (trained on 5x-40x)",
        mean=IMAGENET[0],
        std=IMAGENET[1],
        pooling="token+patch_mean",
        dim=2560,
        precision="fp16 autocast",
        weights_file="pytorch_model.bin",
        hub_id="hf-hub:paige-ai/Virchow2",
        notes="output = concat(class token, mean of the patch tokens, which start at index 5 after 4 registers)",
    )
)
_HOPTIMUS = {"num_classes": 0, "img_size": 224, "global_pool": "token", "init_values": 1e-5, "dynamic_img_size": False}
_HOPTIMUS_NORM = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))
for _name, _title in (("h-optimus-0", "H-optimus-0"), ("h-optimus-1", "H-optimus-1")):
    register_encoder(
        EncoderSpec(
            name=_name,
            title=f"{_title} (Bioptimus), ViT-g/14, 4 register tokens",
            card=f"https://huggingface.co/bioptimus/{_title}",
            library="timm",
            arch="vit_giant_patch14_reg4_dinov2",
            kwargs=_HOPTIMUS,
            tile_px=224,
            mpp=0.5,
            magnification="20x",
            mean=_HOPTIMUS_NORM[0],
            std=_HOPTIMUS_NORM[1],
            pooling="token",
            dim=1536,
            precision="fp16 autocast",
            weights_file="pytorch_model.bin",
            hub_id=f"hf-hub:bioptimus/{_title}",
            notes="its own normalisation, not ImageNet's; fixed 224 px input (dynamic_img_size False)",
        )
    )
register_encoder(
    EncoderSpec(
        name="prov-gigapath",
        title="Prov-GigaPath tile encoder (Providence / Microsoft), ViT-g/16",
        card="https://huggingface.co/prov-gigapath/prov-gigapath",
        library="timm",
        arch="vit_giant_patch14_dinov2",
        kwargs={
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
            "num_classes": 0,
        },
        tile_px=224,
        mpp=0.5,
        magnification="20x",
        mean=IMAGENET[0],
        std=IMAGENET[1],
        pooling="token",
        dim=1536,
        precision="fp32",
        weights_file="pytorch_model.bin",
        hub_id="hf-hub:prov-gigapath/prov-gigapath",
        notes="the card resizes 256 px tiles to 256 and centre-crops 224: histoflow reads the 224 px tile directly",
    )
)
register_encoder(
    EncoderSpec(
        name="conch",
        title="CONCH (Mahmood Lab) vision tower, ViT-B/16 + attentional pooler",
        card="https://huggingface.co/MahmoodLab/CONCH",
        library="conch",
        arch="conch_ViT-B-16",
        kwargs={},
        tile_px=448,
        mpp=None,
        default_mpp=0.5,
        magnification="not stated on the card",
        mean=(0.48145466, 0.4578275, 0.40821073),
        std=(0.26862954, 0.26130258, 0.27577711),
        pooling="conch",
        dim=512,
        precision="fp32",
        weights_file="pytorch_model.bin",
        hub_id="hf_hub:MahmoodLab/conch",
        requires="git+https://github.com/Mahmoodlab/CONCH.git",
        notes="open_clip-based code of its own, not a timm model: encode_image(proj_contrast=False, normalize=False)",
    )
)
register_encoder(
    EncoderSpec(
        name="phikon-v2",
        title="Phikon-v2 (Owkin), DINOv2 ViT-L/16 (Hugging Face transformers)",
        card="https://huggingface.co/owkin/phikon-v2",
        library="transformers",
        arch="Dinov2Model",
        kwargs={},
        tile_px=224,
        mpp=0.5,
        magnification="20x",
        mean=IMAGENET[0],
        std=IMAGENET[1],
        pooling="cls_hidden",
        dim=1024,
        precision="fp32",
        weights_file="model.safetensors",
        hub_id="owkin/phikon-v2",
        requires="transformers",
        notes="a transformers model, not timm: weights PATH is the folder holding config.json + model.safetensors",
    )
)
register_encoder(
    EncoderSpec(
        name="resnet50-trunc",
        title="ResNet-50 (ImageNet, torchvision weights) truncated after layer 3, average-pooled",
        card="https://huggingface.co/timm/resnet50.tv_in1k",
        library="timm",
        arch="resnet50",
        kwargs={"features_only": True, "out_indices": (3,)},
        tile_px=224,
        mpp=None,
        default_mpp=0.5,
        magnification="none (ImageNet); embedded at 20x by convention (CLAM)",
        mean=IMAGENET[0],
        std=IMAGENET[1],
        pooling="avg",
        dim=1024,
        precision="fp32",
        weights_file="pytorch_model.bin",
        hub_id="hf-hub:timm/resnet50.tv_in1k",
        ignore_keys=("layer4.", "fc."),
        baseline=True,
        notes="the CLAM / UNI baseline; a full ResNet-50 weights file loads, layer 4 and the classifier left out",
    )
)
register_encoder(
    EncoderSpec(
        name="vit-s16-imagenet",
        title="ViT-S/16 (ImageNet-21k, fine-tuned on 1k): a small ViT baseline and test entry",
        card="https://huggingface.co/timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
        library="timm",
        arch="vit_small_patch16_224",
        kwargs={"num_classes": 0},
        tile_px=224,
        mpp=None,
        default_mpp=0.5,
        magnification="none (ImageNet)",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        pooling="token",
        dim=384,
        precision="fp32",
        weights_file="model.safetensors",
        hub_id="hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
        baseline=True,
    )
)
