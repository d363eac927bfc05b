"""RunConfig: TOML/YAML round trips, key=value overrides and their errors, presets, the
learning-rate schedule and the resume policy."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import pytest

from resnetbk.train.config import (
    TRAIN_PRESETS,
    ConfigError,
    RunConfig,
    TrainConfig,
    apply_overrides,
    format_config,
    load_config,
    resume_differences,
    run_preset,
    save_config,
)
from resnetbk.train.lm import lr_multiplier


def _changed() -> RunConfig:
    """A config that differs from the defaults in every kind of field."""
    return apply_overrides(run_preset("tiny"), [
        "train.lr=0.004", "betas=0.8,0.99", "train.final_eval_windows=none", "compile=true",
        "time_budget_s=12.5", "threads=3", "data=/a/b,/c", "val_fraction=0.1",
    ])


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".yml"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    cfg = _changed()
    path = save_config(cfg, tmp_path / f"run{suffix}")
    back = load_config(path)
    assert back == cfg
    assert back.train.betas == (0.8, 0.99) and back.train.final_eval_windows is None
    assert back.data == ["/a/b", "/c"]


def test_none_survives_toml_over_a_base_with_a_value(tmp_path: Path) -> None:
    # TOML has no null: None is written as "none" so that it overrides a non-None base value.
    cfg = _changed()
    assert TRAIN_PRESETS["tiny"].final_eval_windows is not None
    back = load_config(save_config(cfg, tmp_path / "run.toml"), base=run_preset("tiny"))
    assert back.train.final_eval_windows is None


def test_partial_file_keeps_base_values(tmp_path: Path) -> None:
    path = tmp_path / "part.toml"
    path.write_text("val_fraction = 0.2\n[train]\nlr = 0.01\nsteps = 7\n")
    base = run_preset("tiny")
    cfg = load_config(path, base=base)
    assert cfg.train.lr == 0.01 and cfg.train.steps == 7 and cfg.val_fraction == 0.2
    assert cfg.train.batch_size == base.train.batch_size and cfg.model == base.model
    assert base.train.lr != 0.01  # the base is not modified


def test_override_coercion() -> None:
    base = run_preset("tiny")
    geometry = "euclidean" if base.model.geometry != "euclidean" else "lorentz"
    cfg = apply_overrides(base, [
        "train.lr=3e-4", "steps=1e3", "batch_size=1_024", "compile=yes", "autocast=off",
        f"model.geometry={geometry}", "threads=none", "data=x.txt", "betas=(0.5, 0.6)",
    ])
    t = cfg.train
    assert t.lr == 3e-4 and isinstance(t.lr, float)
    assert t.steps == 1000 and isinstance(t.steps, int)
    assert t.batch_size == 1024 and t.compile is True and t.autocast == "off"
    assert t.threads is None and t.betas == (0.5, 0.6) and cfg.data == ["x.txt"]
    assert cfg.model.geometry == geometry
    assert base.train.lr != 3e-4  # overrides return a copy


@pytest.mark.parametrize(("override", "needles"), [
    ("train.stpes=3", ["unknown config key", "train.stpes", "train.steps"]),
    ("nonsense=3", ["unknown config key", "'nonsense'"]),
    ("optim.lr=3", ["unknown config section", "'optim'"]),
    ("steps=abc", ["train.steps", "expected int", "'abc'"]),
    ("steps=1.5", ["train.steps", "expected int"]),
    ("lr=fast", ["train.lr", "expected float"]),
    ("compile=maybe", ["train.compile", "true or false"]),
    ("device=gpu", ["train.device", "auto, cpu, cuda", "'gpu'"]),
    ("autocast=fp16", ["train.autocast", "auto, bf16, off"]),
    ("betas=0.9", ["train.betas", "2 comma-separated values"]),
    ("steps", ["not of the form key=value"]),
    ("=3", ["not of the form key=value"]),
    ("batch_size=0", ["train.batch_size", ">= 1"]),
    ("min_lr=1", ["train.min_lr", "must not exceed"]),
    ("lr=nan", ["train.lr", "finite"]),
    ("eval_windows=1", ["train.eval_windows", ">= 2"]),
    ("val_fraction=1.5", ["val_fraction", "(0, 1)"]),
    ("betas=0.9,1.0", ["train.betas", "[0, 1)"]),
    ("model.geometry=spherical", ["model:"]),
])
def test_override_errors(override: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(run_preset("tiny"), [override])
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, (needle, msg)


@dataclasses.dataclass
class _ModelWithLr:
    lr: float = 1.0

    def validate(self) -> None:
        pass


def test_ambiguous_bare_key_names_both() -> None:
    cfg = RunConfig(model=_ModelWithLr())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"ambiguous.*model\.lr or train\.lr|"
                       r"ambiguous.*train\.lr or model\.lr"):
        apply_overrides(cfg, ["lr=0.1"])
    assert apply_overrides(cfg, ["model.lr=0.5"]).model.lr == 0.5


@pytest.mark.parametrize(("name", "text", "needles"), [
    ("bad.toml", "[train\nlr = 1", ["not valid TOML"]),
    ("bad.yaml", "train: [1, 2", ["not valid YAML"]),
    ("type.toml", "[train]\nlr = 'fast'\n", ["type.toml", "train.lr", "expected float"]),
    ("key.yaml", "train:\n  lrr: 0.1\n", ["unknown config key", "train.lrr"]),
    ("section.toml", "train = 3\n", ["[train] must be a table"]),
    ("run.json", "{}", ["must end in"]),
])
def test_bad_files(tmp_path: Path, name: str, text: str, needles: list[str]) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    for needle in needles:
        assert needle in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_presets() -> None:
    for name in ("tiny", "small", "base"):
        cfg = run_preset(name)
        cfg.validate()
        assert cfg.train == TRAIN_PRESETS[name]
    cfg = run_preset("tiny")
    cfg.train.lr = 1.0
    assert run_preset("tiny").train.lr != 1.0  # presets are copied, never shared
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'.*base, small, tiny"):
        run_preset("huge")


def test_print_format_lists_every_key() -> None:
    text = format_config(run_preset("tiny"))
    for f in dataclasses.fields(TrainConfig):
        assert f"\n{f.name} = " in text
    assert "[model]" in text and "[train]" in text


def test_schedule_values() -> None:
    cfg = TrainConfig(steps=110, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_multiplier(0, cfg) == pytest.approx(0.1)
    assert lr_multiplier(4, cfg) == pytest.approx(0.5)
    assert lr_multiplier(9, cfg) == pytest.approx(1.0)
    assert lr_multiplier(10, cfg) == pytest.approx(1.0)
    assert lr_multiplier(60, cfg) == pytest.approx(0.55)  # half-way down the cosine
    assert lr_multiplier(110, cfg) == pytest.approx(0.1)
    values = [lr_multiplier(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    # A time budget advances the cosine when time runs ahead of the steps.
    assert lr_multiplier(20, cfg, time_fraction=0.5) == pytest.approx(0.55)
    assert lr_multiplier(80, cfg, time_fraction=0.5) == pytest.approx(lr_multiplier(80, cfg))
    assert lr_multiplier(20, cfg, time_fraction=2.0) == pytest.approx(0.1)
    no_warmup = TrainConfig(steps=10, warmup_steps=0, lr=1.0, min_lr=0.0)
    assert lr_multiplier(0, no_warmup) == 1.0
    assert math.isclose(lr_multiplier(10, no_warmup), 0.0, abs_tol=1e-12)


def test_resume_policy() -> None:
    base = run_preset("tiny")
    geometry = "euclidean" if base.model.geometry != "euclidean" else "lorentz"
    new = apply_overrides(base, [f"model.geometry={geometry}", "seq_len=64", "data=x",
                                 "lr=1e-2", "steps=5", "log_every=3", "device=cpu",
                                 "threads=1"])
    refused, warned = resume_differences(base, new)
    assert {e.split(":")[0] for e in refused} == {"model.geometry", "train.seq_len", "data"}
    assert {e.split(":")[0] for e in warned} == {"train.lr", "train.steps"}
    assert resume_differences(base, base) == ([], [])
