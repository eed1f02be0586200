"""What every histoflow config shares: strict pydantic models, YAML reading, `--set` overrides.

Every schema (run, tiling, slide prediction, MIL) subclasses `Strict`: unknown keys are errors
naming the closest valid key, so a typo is never silently ignored. `load_model_config` is the
one way a YAML file plus `--set key=value` strings become a validated config.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from histoflow.core.errors import ConfigError
from histoflow.core.io import atomic_write_text

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base of every config section: no unknown keys, and assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FrozenConfig(Strict):
    """A frozen strict config whose constructor raises ConfigError, not pydantic's ValidationError:
    code that builds a config from options (the CLI) reports a bad value like a bad YAML key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise explain(exc, type(self).__name__, type(self)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one)."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} appears twice (first on line {seen[key] + 1}); the first would be ignored",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from a file, with errors that name the file (missing, invalid, duplicate key)."""
    if not Path(path).exists():  # a bare recipe name works from any folder: `histoflow train pcam_simple_cnn`
        from histoflow.core.paths import find_recipe, recipe_names

        recipe = find_recipe(path)
        if recipe is None:
            raise ConfigError(f"{path}: config file not found (recipes by name: {', '.join(recipe_names())})")
        path = recipe
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a folder, expected a YAML config file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def parse_value(text: str) -> Any:
    """`--set` values are YAML scalars/lists: 1e-3, true, [1, 2], null, resnet18."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key a config accepts (for error messages with close matches)."""
    out = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        out.append(key)
        ann = info.annotation
        for candidate in getattr(ann, "__args__", ()) or (ann,):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                out.extend(field_paths(candidate, key + "."))
    return out


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Apply `a.b.c=value` strings to a nested dict."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
            node = node[part]
        node[parts[-1]] = parse_value(value)
    return raw


def explain(exc: ValidationError, source: str, model: type[BaseModel]) -> ConfigError:
    """One ConfigError listing every invalid key, with close matches for unknown ones."""
    lines = []
    known = field_paths(model)
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            msg = "unknown key" + (f" (did you mean {', '.join(close)}?)" if close else "")
        lines.append(f"  {key}: {msg}")
    return ConfigError(f"invalid config {source}:\n" + "\n".join(lines))


def validate(model: type[M], raw: dict, source: str) -> M:
    """`model` validated from a dict, or a ConfigError naming `source` and every bad key."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise explain(exc, source, model) from None


def load_model_config(model: type[M], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> M:
    """Read YAML (or start from defaults), apply `--set` overrides, validate as `model`."""
    raw = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else ("--set" if overrides else "(defaults)")
    return validate(model, apply_overrides(raw, overrides), source)


def save_config(config: BaseModel, path: str | os.PathLike) -> Path:
    """Write a resolved config as YAML, atomically."""
    return atomic_write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
