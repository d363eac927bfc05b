"""Run configuration of ``resnetbk train``: model, training and data settings in one object.

A ``RunConfig`` holds a ``ModelConfig`` (``resnetbk.model``), a ``TrainConfig`` and the data
settings. It is saved and loaded as TOML or YAML (chosen by the file suffix), and every field
can be overridden from the command line as ``key=value`` (``train.lr=3e-4``,
``model.geometry=euclidean``, or a bare ``lr=3e-4`` when only one section has that key).
Values are coerced from their field types, so a config file and the command line are checked
the same way; a bad key or value raises ``ConfigError`` naming the key, the expected type and
the allowed values where they are known.

Resume policy: each field is tagged with what changing it between a checkpoint and
``--resume`` means (``RESUME_FIXED``: refused, it changes the model or the data stream;
``RESUME_WARN``: allowed with a warning, the run is no longer equal to an uninterrupted one;
``RESUME_FREE``: bookkeeping, allowed silently). Every model field and the data settings are
fixed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import yaml

from resnetbk.model import MODEL_PRESETS, ModelConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "AUTOCAST_MODES",
    "DEVICES",
    "TRAIN_PRESETS",
    "ConfigError",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "format_config",
    "load_config",
    "resume_differences",
    "run_preset",
    "save_config",
]

DEVICES = ("auto", "cpu", "cuda")
AUTOCAST_MODES = ("auto", "bf16", "off")
RESUME_FIXED, RESUME_WARN, RESUME_FREE = "fixed", "warn", "free"
SUFFIXES = (".toml", ".yaml", ".yml")


class ConfigError(ValueError):
    """An invalid configuration: unknown key, wrong type, value out of range, bad file."""


# Field metadata: resume policy (module docstring) and, for strings, the allowed values.
_FIXED = {"resume": RESUME_FIXED}
_FREE = {"resume": RESUME_FREE}


@dataclass
class TrainConfig:
    """Optimisation, evaluation and bookkeeping settings of one training run.

    The learning rate warms up linearly from 0 over ``warmup_steps`` and then follows a cosine
    from ``lr`` down to ``min_lr`` at ``steps`` (both optimizers share the schedule: the
    Riemannian one starts from ``manifold_lr`` and ends at ``min_lr * manifold_lr / lr``).
    """

    steps: int = 1000
    batch_size: int = field(default=16, metadata=_FIXED)
    seq_len: int = field(default=512, metadata=_FIXED)
    lr: float = 2e-3
    # Peak rate of RiemannianAdam (manifold parameters); None: the same as ``lr``.
    manifold_lr: float | None = None
    min_lr: float = 2e-4
    warmup_steps: int = 100
    # AdamW decoupled weight decay, on >= 2-D Euclidean weights only (see docs/TRAINING.md).
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    # Maximum global gradient norm over all parameters (0: no clipping, norm still logged).
    grad_clip: float = 1.0
    eval_every: int = field(default=200, metadata=_FREE)
    # Validation windows of the periodic evaluations (a fixed subset spread over the split).
    eval_windows: int = 64
    # Validation windows of the final evaluation; None: every window of the split.
    final_eval_windows: int | None = 512
    log_every: int = field(default=10, metadata=_FREE)
    ckpt_every: int = field(default=500, metadata=_FREE)
    seed: int = field(default=0, metadata=_FIXED)
    device: str = field(default="auto", metadata={**_FREE, "choices": DEVICES})
    # "auto": bf16 autocast on CUDA, off on CPU. The loss is always float32.
    autocast: str = field(default="auto", metadata={"choices": AUTOCAST_MODES})
    compile: bool = field(default=False, metadata=_FREE)
    # torch CPU threads while training (restored afterwards); None keeps the current setting.
    threads: int | None = field(default=None, metadata=_FREE)
    # Stop after this many seconds spent in training steps (evaluation and checkpoint writes
    # excluded), with a checkpoint; the schedule then anneals by time (docs/TRAINING.md).
    time_budget_s: float | None = field(default=None, metadata=_FREE)
    # Speculative backprop (docs/SPECPROP.md): the model cut into two stages after half of its
    # global blocks, default SpecPropConfig; no gradient clipping. Runs cannot be resumed (the
    # draft gradient models are not checkpointed).
    specprop: bool = field(default=False, metadata=_FIXED)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        positive = ("batch_size", "seq_len", "eval_every", "log_every", "ckpt_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps", "warmup_steps", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_windows < 2:
            raise ConfigError(f"train.eval_windows must be >= 2 (an interval needs two "
                              f"windows), got {self.eval_windows}")
        if self.final_eval_windows is not None and self.final_eval_windows < 2:
            raise ConfigError(f"train.final_eval_windows must be >= 2 or none, got "
                              f"{self.final_eval_windows}")
        for name in ("lr", "min_lr", "weight_decay", "eps", "grad_clip"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"train.{name} must be a finite number >= 0, got {v}")
        if self.manifold_lr is not None and not (
            math.isfinite(self.manifold_lr) and self.manifold_lr >= 0
        ):
            raise ConfigError(f"train.manifold_lr must be >= 0 or none, got {self.manifold_lr}")
        if self.min_lr > self.lr:
            raise ConfigError(f"train.min_lr ({self.min_lr}) must not exceed train.lr ({self.lr})")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must be two values in [0, 1), got {self.betas}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"train.threads must be >= 1 or none, got {self.threads}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"train.time_budget_s must be > 0 or none, got {self.time_budget_s}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"train.{f.name} must be one of {', '.join(choices)}; got "
                                  f"{getattr(self, f.name)!r}")


@dataclass
class RunConfig:
    """Everything that defines a training run: model, training settings and data."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Files or folders of training text; None: the Python standard library source corpus.
    data: list[str] | None = field(default=None, metadata=_FIXED)
    val_fraction: float = field(default=0.05, metadata=_FIXED)
    test_fraction: float = field(default=0.05, metadata=_FIXED)

    def validate(self) -> None:
        """Check every section; raise ``ConfigError`` naming the offending key."""
        try:
            self.model.validate()
        except ValueError as e:
            raise ConfigError(f"model: {e}") from None
        self.train.validate()
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ConfigError(f"{name} must be in (0, 1), got {v}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("val_fraction + test_fraction must be < 1 (the rest is training "
                              f"data), got {self.val_fraction + self.test_fraction}")
        if self.data is not None and not self.data:
            raise ConfigError("data must be none (the stdlib corpus) or a non-empty list of paths")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
        """A config from a (possibly partial) dict: keys not given keep ``base``'s values
        (defaults when ``base`` is None). Values are type-checked like overrides."""
        cfg = copy.deepcopy(base) if base is not None else cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"a run config must be a mapping of sections, got "
                              f"{type(data).__name__}")
        for key, value in data.items():
            if key in _SECTIONS:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"[{key}] must be a table of settings, got {value!r}")
                for sub, v in value.items():
                    _set(cfg, f"{key}.{sub}", v)
            else:
                _set(cfg, key, value)
        return cfg


_SECTIONS = ("model", "train")


# Training presets paired with the model presets of the same name. `tiny` is the CPU demo
# (README): measured on 2 CPU cores, see docs/TRAINING.md.
TRAIN_PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(steps=1000, batch_size=16, seq_len=512, lr=3e-3, min_lr=3e-4,
                        warmup_steps=100, eval_every=200, eval_windows=16,
                        final_eval_windows=256, log_every=20, ckpt_every=250),
    # GPU presets: 64 / 128 KiB per step at the 8K-byte contexts the model presets target.
    "small": TrainConfig(steps=20000, batch_size=8, seq_len=8192, lr=2e-3, min_lr=2e-4,
                         warmup_steps=500, eval_every=1000, eval_windows=64,
                         final_eval_windows=None, log_every=50, ckpt_every=2000),
    "base": TrainConfig(steps=50000, batch_size=16, seq_len=8192, lr=1e-3, min_lr=1e-4,
                        warmup_steps=2000, eval_every=2000, eval_windows=128,
                        final_eval_windows=None, log_every=100, ckpt_every=5000),
}


def run_preset(name: str) -> RunConfig:
    """A fresh ``RunConfig`` of preset ``name`` (model and training presets of that name)."""
    if name not in TRAIN_PRESETS or name not in MODEL_PRESETS:
        names = sorted(set(TRAIN_PRESETS) & set(MODEL_PRESETS))
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(names)}")
    return RunConfig(model=copy.deepcopy(MODEL_PRESETS[name]),
                     train=copy.deepcopy(TRAIN_PRESETS[name]))


# ----------------------------------------------------------------------------- key=value


def _fields(obj: Any) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(obj) if f.name not in _SECTIONS}


def _resolve(cfg: RunConfig, key: str) -> tuple[Any, str, str]:
    """(object holding the field, field name, full dotted key) for ``key``."""
    owners = {"": cfg, "model": cfg.model, "train": cfg.train}
    if "." in key:
        section, name = key.split(".", 1)
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config section {section!r} in {key!r}; sections are "
                              f"{', '.join(_SECTIONS)} (top-level keys have no prefix: "
                              f"{', '.join(_fields(cfg))})")
        candidates = [(section, name)] if name in _fields(owners[section]) else []
    else:
        candidates = [(s, key) for s, o in owners.items() if key in _fields(o)]
    if len(candidates) > 1:
        opts = " or ".join(f"{s}.{n}" if s else n for s, n in candidates)
        raise ConfigError(f"{key!r} is ambiguous: write {opts}")
    if not candidates:
        known = [f"{s}.{n}" if s else n for s, o in owners.items() for n in _fields(o)]
        close = difflib.get_close_matches(key, known + [k.split(".", 1)[-1] for k in known],
                                          n=3)
        hint = f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}; see --print-config for all keys")
    section, name = candidates[0]
    return owners[section], name, f"{section}.{name}" if section else name


def _set(cfg: RunConfig, key: str, value: Any) -> None:
    owner, name, full = _resolve(cfg, key)
    f = _fields(owner)[name]
    hints = typing.get_type_hints(type(owner))
    new = _coerce(value, hints[name], full)
    choices = f.metadata.get("choices")
    if choices and new not in choices:
        raise ConfigError(f"{full}: expected one of {', '.join(choices)}; got {value!r}")
    setattr(owner, name, new)


def apply_overrides(cfg: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """A copy of ``cfg`` with ``key=value`` overrides applied, then validated.

    Keys are ``section.field`` (``train.lr``, ``model.geometry``), a top-level field
    (``data``, ``val_fraction``) or a bare field name that exists in one section only.
    Values are parsed from the field's type: numbers, ``true``/``false``, ``none`` for
    optional fields, comma-separated lists and tuples (``betas=0.9,0.95``).
    """
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value "
                              "(e.g. train.lr=3e-4)")
        _set(cfg, key.strip(), value.strip())
    cfg.validate()
    return cfg


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` (a string from the command line or a value read from TOML/YAML) as type
    ``tp``; ``ConfigError`` naming ``key`` and the expected type otherwise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        ):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if origin is typing.Literal:
        for arg in args:
            if value == arg or (isinstance(value, str) and str(arg) == value):
                return arg
        raise ConfigError(f"{key}: expected one of {', '.join(map(str, args))}; got {value!r}")
    if origin in (tuple, list):
        items = value
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            items = [s.strip() for s in text.split(",")] if text else []
        if not isinstance(items, (list, tuple)):
            raise bad
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} comma-separated values "
                                  f"({_type_name(tp)}), got {value!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(items, args, strict=True))
        elem = args[0] if args else str
        out = [_coerce(v, elem, key) for v in items]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:  # 1e4 on the command line means 10000
                    f = float(value)
                except ValueError:
                    raise bad from None
                if f.is_integer():
                    return int(f)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise ConfigError(f"{key}: fields of type {_type_name(tp)} cannot be set from a config")


# ----------------------------------------------------------------------------- files


def _none_to_text(obj: Any) -> Any:
    """TOML has no null: write None as the string "none" (read back by the coercion)."""
    if isinstance(obj, dict):
        return {k: _none_to_text(v) for k, v in obj.items()}
    return "none" if obj is None else obj


def format_config(cfg: RunConfig, fmt: str = "toml") -> str:
    """``cfg`` as TOML (``fmt="toml"``) or YAML (``"yaml"``) text."""
    data = cfg.to_dict()
    if fmt == "toml":
        top = {k: v for k, v in data.items() if k not in _SECTIONS}
        return tomli_w.dumps({**_none_to_text(top),
                              **{s: _none_to_text(data[s]) for s in _SECTIONS}})
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False)
    raise ConfigError(f"config format must be toml or yaml, got {fmt!r}")


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"config file {path} must end in {', '.join(SUFFIXES)}")
    return "toml" if suffix == ".toml" else "yaml"


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write ``cfg`` as TOML (``.toml``) or YAML (``.yaml``/``.yml``)."""
    path = Path(path)
    path.write_text(format_config(cfg, _format_of(path)))
    return path


def load_config(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """Read a TOML or YAML run config; keys it does not set keep ``base``'s values."""
    path = Path(path)
    fmt = _format_of(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text) if fmt == "toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {path} is not valid {fmt.upper()}: "
                          f"{' '.join(str(e).split())}") from None
    try:
        cfg = RunConfig.from_dict(data or {}, base)
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg


def resume_differences(saved: RunConfig, current: RunConfig) -> tuple[list[str], list[str]]:
    """Fields that differ between a checkpoint's config and the current one, as
    (refused, warned) lists of ``"key: old -> new"``; bookkeeping fields are not listed."""
    refused: list[str] = []
    warned: list[str] = []
    for section, a, b in (("", saved, current), ("model.", saved.model, current.model),
                          ("train.", saved.train, current.train)):
        for name, f in _fields(a).items():
            old, new = getattr(a, name), getattr(b, name)
            if old == new:
                continue
            # Every model field changes the model, whatever its metadata says.
            policy = RESUME_FIXED if section == "model." else f.metadata.get("resume",
                                                                             RESUME_WARN)
            entry = f"{section}{name}: {old!r} -> {new!r}"
            if policy == RESUME_FIXED:
                refused.append(entry)
            elif policy == RESUME_WARN:
                warned.append(entry)
    return refused, warned
