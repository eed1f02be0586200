"""Build a registered encoder (histoflow.models.encoders) as a histoflow backbone, with its weights.

Weights come from a local file, never silently from elsewhere:
- `weights=PATH`: a file (pytorch_model.bin, *.safetensors, a .pth state dict) or the folder a
  Hugging Face download leaves (holding one of those);
- `weights=None`: the folder named by HISTOFLOW_WEIGHTS, as `<folder>/<encoder>/<file>`;
- `weights="hub"`: timm's hub name (needs the network and, for gated models, a token);
- `weights="random"`: seeded random initialisation (tests, benchmarks), recorded as such.
Loading is strict: a file for another architecture fails naming the encoder, the file, the
missing and unexpected keys and the shape mismatches, and the file the model card names. Giant
models are built on the meta device and the file's tensors assigned into them, so a 1.1 B
parameter model costs its weights once, not twice, and nothing is spent on a random init.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from histoflow.core.errors import CheckpointError, ConfigError
from histoflow.models.encoders import EncoderSpec, get_encoder_spec, resolve_kwargs

log = logging.getLogger(__name__)
WEIGHTS_ENV = "HISTOFLOW_WEIGHTS"
WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors", "pytorch_model.safetensors")


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # "file", "hub" or "random"
    path: Path | None = None

    @property
    def label(self) -> str:
        return str(self.path) if self.path else self.kind

    def sha256(self) -> str:
        """sha256 of the weights file; 'random' / 'hub' when there is no file to hash."""
        return file_sha256(self.path) if self.path else self.kind


# -- the module ---------------------------------------------------------------------------------------
class EncoderBackbone(nn.Module):
    """An encoder as a histoflow backbone: images (normalised) -> pooled features (N, dim)."""

    def __init__(self, spec: EncoderSpec, model: nn.Module):
        super().__init__()
        self.spec = spec
        self.model = model
        self.num_features = spec.dim
        self.prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))

    @property
    def gradcam_layer(self) -> nn.Module:
        info = getattr(self.model, "feature_info", None)
        if info:  # as histoflow.models.backbones.TimmBackbone: the deepest recorded stage
            last = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
            return self.model.get_submodule(last)
        return list(self.model.children())[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooling = self.spec.pooling
        if pooling == "token":  # timm pools the class token itself (num_classes=0)
            return self.model(x)
        if pooling == "token+patch_mean":  # global_pool="": every token, normalised
            tokens = self.model(x)
            return torch.cat([tokens[:, 0], tokens[:, self.prefix_tokens :].mean(1)], dim=-1)
        if pooling == "avg":  # features_only CNN: the last kept stage, average-pooled
            return self.model(x)[-1].mean((2, 3))
        if pooling == "cls_hidden":  # transformers: class token of the last hidden state
            return self.model(pixel_values=x).last_hidden_state[:, 0]
        if pooling == "conch":
            return cast(Any, self.model).encode_image(x, proj_contrast=False, normalize=False)
        raise ConfigError(f"encoder {self.spec.name!r}: unknown pooling {pooling!r}")


def build_architecture(spec: EncoderSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The bare timm model of `spec`, random or (device "meta") unallocated."""
    if spec.library != "timm":
        raise ConfigError(f"encoder {spec.name!r} is a {spec.library} model, not timm")
    import timm

    with torch.device(device):
        return timm.create_model(spec.arch, pretrained=False, **resolve_kwargs(spec.kwargs))


def build_encoder(name: str, weights: str | Path | None = None, seed: int = 0) -> tuple[EncoderBackbone, WeightsSource]:
    """The encoder `name` with its weights (see the module doc) and where they came from."""
    spec = get_encoder_spec(name)
    source = find_weights(spec, weights)
    if spec.library == "conch":
        return EncoderBackbone(spec, _build_conch(spec, source)), source
    if spec.library == "transformers":
        return EncoderBackbone(spec, _build_transformers(spec, source)), source
    if source.kind == "hub":
        import timm

        try:  # the card's kwargs on top of the hub's config, as the cards call it
            model = timm.create_model(spec.hub_id or spec.arch, pretrained=True, **resolve_kwargs(spec.kwargs))
        except Exception as exc:  # noqa: BLE001 - hub/network failures surface with advice
            raise ConfigError(
                f"encoder {name!r}: cannot download {spec.hub_id} ({type(exc).__name__}: {exc}). Offline or not "
                f"granted access? Download {spec.weights_file} from {spec.card} and pass --weights PATH"
            ) from exc
        return EncoderBackbone(spec, model), source
    if source.kind == "random":
        torch.manual_seed(seed)
        return EncoderBackbone(spec, build_architecture(spec)), source
    path = cast(Path, source.path)  # kind "file"
    backbone = EncoderBackbone(spec, build_architecture(spec, "meta"))
    load_encoder_state(backbone, read_state_dict(path), path)
    return backbone, source


# -- finding and reading weights ----------------------------------------------------------------------
def find_weights(spec: EncoderSpec, weights: str | Path | None) -> WeightsSource:
    if weights in ("random", "hub"):
        return WeightsSource(str(weights))
    if weights is not None:
        path = Path(weights)
        if path.is_dir():
            return WeightsSource("file", _file_in(spec, path, [path]))
        if not path.is_file():
            raise CheckpointError(f"{path}: weights file for encoder {spec.name!r} not found")
        return WeightsSource("file", path)
    folder = os.environ.get(WEIGHTS_ENV)
    looked: list[Path] = []
    if folder:
        found = _file_in(spec, Path(folder) / spec.name, looked, required=False)
        if found is not None:
            return WeightsSource("file", found)
    where = f" (looked in {', '.join(map(str, looked))})" if looked else f" ({WEIGHTS_ENV} is not set)"
    raise ConfigError(
        f"encoder {spec.name!r}: no weights given{where}. Download {spec.weights_file} from {spec.card} and pass "
        f"--weights PATH (or put it in ${WEIGHTS_ENV}/{spec.name}/); --weights hub downloads it when online, "
        f"--weights random embeds with random weights"
    )


def _file_in(spec: EncoderSpec, folder: Path, looked: list[Path], required: bool = True) -> Path | None:
    if spec.library == "transformers" and (folder / "config.json").is_file():
        return folder
    for name in dict.fromkeys((spec.weights_file, *WEIGHT_FILES)):
        looked.append(folder / name)
        if (folder / name).is_file():
            return folder / name
    if required:
        raise CheckpointError(f"{folder}: no {' or '.join(WEIGHT_FILES)} for encoder {spec.name!r}")
    return None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or torch file (unwrapping {'state_dict': ...} / {'model': ...})."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            blob: object = load_file(str(path))
        else:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # any read error means an unusable file
        raise CheckpointError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from exc
    if isinstance(blob, dict) and "histoflow_version" in blob:  # a histoflow checkpoint: its backbone
        blob = {k[len("backbone.") :]: v for k, v in blob["state_dict"].items() if k.startswith("backbone.")}
    for key in ("state_dict", "model"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(blob).__name__}")
    return blob


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file (cached per path, size and mtime: a 4.5 GB file is hashed once per process)."""
    if path.is_dir():  # a transformers folder: hash its weights file(s)
        h = hashlib.sha256()
        for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            h.update(file_sha256(f).encode())
        return h.hexdigest()
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


# -- strict loading -----------------------------------------------------------------------------------
def key_problems(
    file_shapes: dict[str, tuple[int, ...]], model_shapes: dict[str, tuple[int, ...]], ignore: tuple[str, ...] = ()
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape mismatches) of a file's keys against a model's; pure, on shapes."""
    kept = {k: s for k, s in file_shapes.items() if not k.startswith(ignore)}
    missing = sorted(set(model_shapes) - set(kept))
    unexpected = sorted(set(kept) - set(model_shapes))
    shapes = [
        f"{k}: file {tuple(kept[k])} vs model {tuple(model_shapes[k])}"
        for k in sorted(set(kept) & set(model_shapes))
        if tuple(kept[k]) != tuple(model_shapes[k])
    ]
    return missing, unexpected, shapes


def shapes_of(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def mismatch_message(spec: EncoderSpec, path: Path | str, missing, unexpected, shapes, n: int = 3) -> str:
    parts = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes)):
        if items:
            parts.append(f"{len(items)} {what} (e.g. {', '.join(items[:n])})")
    return (
        f"{path}: not the weights of encoder {spec.name!r} ({spec.arch}): {'; '.join(parts)}. "
        f"The model card names {spec.weights_file} from {spec.hub_id or spec.card} ({spec.card})"
    )


def check_state_dict(spec: EncoderSpec, file_shapes: dict, model_shapes: dict, path: Path | str) -> None:
    """Raise CheckpointError unless the file's keys and shapes are exactly the model's."""
    missing, unexpected, shapes = key_problems(file_shapes, model_shapes, spec.ignore_keys)
    if missing or unexpected or shapes:
        raise CheckpointError(mismatch_message(spec, path, missing, unexpected, shapes))


def load_encoder_state(backbone: EncoderBackbone, state: dict[str, torch.Tensor], path: Path | str) -> None:
    """Strictly load a bare timm state dict (keys as the card's model names them) into `backbone`."""
    model = backbone.model
    own = model.state_dict()  # once: building it walks every parameter (~3 ms on a ViT-g)
    if state and all(k.startswith("model.") for k in state) and not any(k in own for k in state):
        state = {k[len("model.") :]: v for k, v in state.items()}  # saved from a histoflow backbone
    check_state_dict(backbone.spec, shapes_of(state), shapes_of(own), path)
    state = {k: v for k, v in state.items() if not k.startswith(backbone.spec.ignore_keys)}
    on_meta = any(t.is_meta for t in model.state_dict().values())
    model.load_state_dict(state, strict=True, assign=on_meta)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:  # non-persistent buffers are not in any file: rebuild them for real
        raise CheckpointError(f"{path}: encoder {backbone.spec.name!r}: tensors not set by the file: {left[:3]}")
    if on_meta:  # a file may hold fp16/bf16 tensors: compute in fp32 like the card's examples
        model.float()


# -- encoders outside timm ------------------------------------------------------------------------------
def _build_conch(spec: EncoderSpec, source: WeightsSource) -> nn.Module:
    try:
        from conch.open_clip_custom import create_model_from_pretrained
    except ImportError as exc:
        raise ConfigError(
            f"encoder 'conch' needs Mahmood Lab's CONCH code (open_clip-based, not a timm model): "
            f"pip install {spec.requires}"
        ) from exc
    if source.kind == "random":
        raise ConfigError("encoder 'conch': random weights are not supported; give --weights PATH")
    checkpoint = str(source.path) if source.path else spec.hub_id
    model, _ = create_model_from_pretrained(spec.arch, checkpoint_path=checkpoint)
    return model


def _build_transformers(spec: EncoderSpec, source: WeightsSource) -> nn.Module:
    try:
        from transformers import AutoModel
    except ImportError as exc:
        raise ConfigError(
            f"encoder {spec.name!r} is a Hugging Face transformers model ({spec.arch}), not timm: "
            f"pip install {spec.requires}"
        ) from exc
    if source.kind == "random":
        raise ConfigError(f"encoder {spec.name!r}: random weights are not supported; give --weights FOLDER")
    where = str(source.path.parent if source.path and source.path.is_file() else source.path or spec.hub_id)
    return AutoModel.from_pretrained(where, local_files_only=source.kind == "file")


# -- encoders as `model.name` backbones for `train` ---------------------------------------------------
def _register_models() -> None:
    from histoflow.models.encoders import encoder_names
    from histoflow.models.registry import register_model

    def factory_for(name: str):
        def factory(pretrained: bool = False, weights: str | Path | None = None, **params) -> EncoderBackbone:
            if params:
                raise ConfigError(
                    f"encoder {name!r} takes no model.params (its model card fixes the architecture), got {params}"
                )
            return build_encoder(name, weights if weights is not None else ("hub" if pretrained else "random"))[0]

        return factory

    for name in encoder_names():
        spec = get_encoder_spec(name)
        register_model(name, f"encoder: {spec.title}; {spec.dim} features, {spec.tile_px} px")(factory_for(name))


_register_models()
