"""The search space of `histoflow tune`: the `tune:` section of a run config, checked up front.

```yaml
tune:
  train.optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # float range (log scale)
  train.batch_size: [64, 128]                                  # categorical
  model.params: [{widths: [8, 16]}, {widths: [16, 32]}]         # any YAML values as choices
  augment.colour_jitter: {brightness: {low: 0.0, high: 0.3}}   # a section: nested keys
  pruner: median                                               # study settings (see SETTINGS)
```

Keys are full dotted config keys; a few short aliases (`lr`, `batch_size`, `model`...) are
accepted. Every problem (unknown field, empty or inverted range, a value the config rejects)
is a ConfigError raised before any trial trains, naming the key and the closest valid keys.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import BaseModel, ValidationError

from histoflow.config import RunConfig, field_paths
from histoflow.core.errors import ConfigError

# Short names for the keys people tune most; the full dotted key always works too.
ALIASES = {
    "lr": "train.optimizer.lr",
    "weight_decay": "train.optimizer.weight_decay",
    "optimizer": "train.optimizer.name",
    "scheduler": "train.scheduler.name",
    "batch_size": "train.batch_size",
    "epochs": "train.epochs",
    "label_smoothing": "train.label_smoothing",
    "model": "model.name",
    "dropout": "model.dropout",
}

# Study settings share the `tune:` mapping with the space; none of them is a config field.
SETTINGS = {"sampler", "pruner", "metric", "trials", "baseline", "startup_trials", "warmup_epochs"}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
METRICS = {"val_auc": "maximize", "val_acc": "maximize", "val_loss": "minimize"}
RANGE_KEYS = {"low", "high", "log", "step"}
# Fields a search may not touch: the space itself, and where results are logged.
FORBIDDEN_SECTIONS = {"tune", "tracking", "name"}


@dataclass(frozen=True)
class Param:
    """One searched config key: a float/int range or a list of choices."""

    key: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    # Optuna stores only None/bool/int/float/str choices; lists and mappings (model.params,
    # a whole augment section) go through Optuna as their JSON text and come back decoded.
    @property
    def _encoded(self) -> bool:
        return any(isinstance(c, (list, dict)) for c in self.choices)

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            # ranges (float, int) always have both ends: see _range_param
            low, high = cast(float, self.low), cast(float, self.high)
            return trial.suggest_int(self.key, int(low), int(high), log=self.log, step=int(self.step or 1))
        if self._encoded:
            return json.loads(trial.suggest_categorical(self.key, [json.dumps(c) for c in self.choices]))
        return trial.suggest_categorical(self.key, list(self.choices))

    def decode(self, value: Any) -> Any:
        """A value as Optuna recorded it (a trial's params) -> the config value."""
        return json.loads(value) if self._encoded else value

    def to_optuna(self, value: Any) -> Any:
        """A config value as Optuna records it (for enqueueing the baseline trial)."""
        return json.dumps(value) if self._encoded else value

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return cast(float, self.low) <= value <= cast(float, self.high)  # a range: both ends set

    def describe(self) -> dict:
        if self.kind == "categorical":
            return {"key": self.key, "kind": self.kind, "choices": list(self.choices)}
        return {
            "key": self.key,
            "kind": self.kind,
            "low": self.low,
            "high": self.high,
            "log": self.log,
            "step": self.step,
        }


@dataclass(frozen=True)
class TuneSettings:
    sampler: str = "tpe"
    pruner: str = "median"
    metric: str = "val_auc"
    trials: int | None = None  # default for --trials
    baseline: bool = True  # enqueue the config's own values as trial 0 (the reference)
    startup_trials: int = 3  # median pruner: trials that are never pruned (a reference first)
    warmup_epochs: int = 1  # median pruner: epochs of every trial that are never pruned

    @property
    def direction(self) -> str:
        return METRICS[self.metric]


@dataclass
class SearchSpace:
    params: list[Param]
    settings: TuneSettings = field(default_factory=TuneSettings)

    def signature(self) -> dict:
        """What a resumed study must agree on (kept in the study's user attrs)."""
        return {
            "params": [p.describe() for p in sorted(self.params, key=lambda p: p.key)],
            "metric": self.settings.metric,
        }

    def sample(self, trial) -> dict[str, Any]:
        return {p.key: p.suggest(trial) for p in self.params}

    def apply(self, base: RunConfig, values: dict[str, Any], name: str | None = None) -> RunConfig:
        """`base` with `values` set; the result has no `tune:` section (it is ready to train)."""
        raw = base.model_dump(mode="json")
        raw["tune"] = {}
        if name:
            raw["name"] = name
        for key, value in values.items():
            set_dotted(raw, key, copy.deepcopy(value))
        try:
            return RunConfig.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"tune: values {values} make an invalid config ({problems})") from None

    def baseline_values(self, base: RunConfig) -> dict[str, Any] | None:
        """The base config's own value of every searched key, or None when one lies outside the space."""
        raw = base.model_dump(mode="json")
        values = {}
        for p in self.params:
            found, value = get_dotted(raw, p.key)
            if not found or not p.contains(value):
                return None
            values[p.key] = value
        return values


def set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}  # a section that was null (e.g. augment.colour_jitter) starts from defaults
        node = node[part]
    node[parts[-1]] = value


def get_dotted(raw: dict, key: str) -> tuple[bool, Any]:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _unwrap(annotation: Any) -> list:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def field_type(key: str) -> Any:
    """The annotation of a dotted key; "free" below a dict field (model.params.*); None if unknown."""
    model: type[BaseModel] = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            return None
        candidates = _unwrap(info.annotation)
        if i == len(parts) - 1:
            return candidates[0] if len(candidates) == 1 else info.annotation
        sub = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if sub:
            model = sub[0]
        elif any(typing.get_origin(c) is dict or c is dict for c in candidates):
            return "free"  # model.params is passed to the factory, which checks its own keys
        else:
            return None
    return None  # pragma: no cover


def _unknown_key(key: str, source: str) -> ConfigError:
    known = [k for k in field_paths(RunConfig) if k.split(".")[0] not in FORBIDDEN_SECTIONS] + list(ALIASES)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    # "optimizer.lr" or "colour_jitter" are best matched on their last part
    tail = key.split(".")[-1]
    close += [k for k in known if k.split(".")[-1] == tail and k not in close][:3]
    hint = f"; did you mean {', '.join(close)}?" if close else " (see `histoflow tune --help` for the format)"
    return ConfigError(f"{source}: tune.{key}: no such config field{hint}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _range_param(key: str, spec: dict, annotation: Any, source: str) -> Param:
    where = f"{source}: tune.{key}"
    extra = set(spec) - RANGE_KEYS
    if extra:
        raise ConfigError(f"{where}: unknown range key(s) {sorted(extra)}; a range takes {sorted(RANGE_KEYS)}")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a range needs both low and high, got {spec}")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    if not (_is_number(low) and _is_number(high)):
        raise ConfigError(f"{where}: low and high must be numbers, got low={low!r}, high={high!r}")
    if low == high:
        raise ConfigError(f"{where}: empty range (low == high == {low}); fix the value in the config instead")
    if low > high:
        raise ConfigError(f"{where}: inverted range (low {low} > high {high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (not _is_number(step) or step <= 0 or log):
        raise ConfigError(f"{where}: step must be a positive number and cannot be combined with log, got {step!r}")
    if annotation is int or (annotation == "free" and all(isinstance(v, int) for v in (low, high))):
        if not all(float(v).is_integer() for v in (low, high)) or (step is not None and not float(step).is_integer()):
            raise ConfigError(f"{where}: an integer field needs integer low/high/step, got {spec}")
        return Param(key, "int", int(low), int(high), log, int(step) if step else None)
    if annotation not in (float, "free"):
        name = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"{where}: a {name} field takes a list of choices, not a numeric range")
    return Param(key, "float", float(low), float(high), log, step)


def _params(key: str, spec: Any, source: str) -> list[Param]:
    key = ALIASES.get(key, key)
    if key.split(".")[0] in FORBIDDEN_SECTIONS:
        raise ConfigError(f"{source}: tune.{key}: the {key.split('.')[0]} section cannot be searched")
    annotation = field_type(key)
    if annotation is None:
        raise _unknown_key(key, source)
    if isinstance(spec, dict) and "choices" in spec:
        spec = spec["choices"]
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{source}: tune.{key}: empty list of choices")
        if len({json.dumps(c, sort_keys=True) for c in spec}) != len(spec):
            raise ConfigError(f"{source}: tune.{key}: repeated choices in {spec}")
        return [Param(key, "categorical", choices=tuple(spec))]
    if isinstance(spec, dict) and set(spec) & {"low", "high"}:
        return [_range_param(key, spec, annotation, source)]
    if isinstance(spec, dict) and spec:
        # a mapping of sub-keys: search inside a section (augment.colour_jitter: {brightness: ...})
        return [p for sub, sub_spec in spec.items() for p in _params(f"{key}.{sub}", sub_spec, source)]
    raise ConfigError(
        f"{source}: tune.{key}: expected a range {{low, high[, log, step]}} or a list of choices, "
        f"got {spec!r} (a fixed value belongs in the config itself)"
    )


def _settings(tune: dict, source: str) -> TuneSettings:
    s = {k: tune[k] for k in SETTINGS if k in tune}
    checks = {"sampler": SAMPLERS, "pruner": PRUNERS, "metric": tuple(METRICS)}
    for name, allowed in checks.items():
        if name in s and s[name] not in allowed:
            close = difflib.get_close_matches(str(s[name]), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{source}: tune.{name}: {s[name]!r} is not one of {', '.join(allowed)}{hint}")
    for name in ("trials", "startup_trials", "warmup_epochs"):
        v = s.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (1 if name == "trials" else 0)):
            raise ConfigError(
                f"{source}: tune.{name}: expected a whole number >= {1 if name == 'trials' else 0}, got {v!r}"
            )
    return TuneSettings(**s)


def _check_values(space: SearchSpace, base: RunConfig, source: str) -> None:
    """Every choice and both ends of every range must give a valid config, so a typo in a
    choice fails now and not after hours of trials."""
    from histoflow.models.factory import get_factory

    for p in space.params:
        values: list[Any] = list(p.choices) if p.kind == "categorical" else [p.low, p.high]
        for v in values:
            try:
                space.apply(base, {p.key: v})
                if p.key == "model.name":
                    get_factory(v)
            except ConfigError as exc:
                raise ConfigError(f"{source}: tune.{p.key}: value {v!r} is not valid: {exc}") from None


def parse_space(tune: dict, base: RunConfig, source: str = "config") -> SearchSpace:
    """Parse and check a `tune:` section against the config it will modify."""
    if not isinstance(tune, dict):
        raise ConfigError(f"{source}: tune must be a mapping of config keys to ranges or choices")
    settings = _settings(tune, source)
    params: list[Param] = []
    for key, spec in tune.items():
        if key in SETTINGS:
            continue
        params.extend(_params(str(key), spec, source))
    if not params:
        raise ConfigError(
            f"{source}: the tune section names no parameter to search "
            f"(e.g. tune: {{train.optimizer.lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}}})"
        )
    seen: set[str] = set()
    for p in params:
        if p.key in seen:
            raise ConfigError(f"{source}: tune.{p.key} is given twice (an alias and its full key?)")
        seen.add(p.key)
    space = SearchSpace(params, settings)
    _check_values(space, base, source)
    return space


def diff_signatures(stored: dict, current: dict) -> list[str]:
    """Human-readable differences between two space signatures (for resumed studies)."""
    lines = []
    if stored.get("metric") != current.get("metric"):
        lines.append(f"metric: {stored.get('metric')} -> {current.get('metric')}")
    old = {p["key"]: p for p in stored.get("params", [])}
    new = {p["key"]: p for p in current.get("params", [])}
    for key in sorted(old.keys() - new.keys()):
        lines.append(f"removed {key}")
    for key in sorted(new.keys() - old.keys()):
        lines.append(f"added {key}")
    for key in sorted(old.keys() & new.keys()):
        if old[key] != new[key]:
            a = {k: v for k, v in old[key].items() if k != "key"}
            b = {k: v for k, v in new[key].items() if k != "key"}
            lines.append(f"changed {key}: {a} -> {b}")
    return lines
