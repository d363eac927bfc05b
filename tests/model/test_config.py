"""ModelConfig: validation, serialisable fields, presets and the parameter-matched baseline."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from _model_variants import MICRO

from resnetbk.debug import debug_checks
from resnetbk.model import MODEL_PRESETS, ModelConfig, baseline_config, build_model


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("geometry", "spherical", "geometry.*spherical"), ("mixer", "ssm", "mixer"),
     ("arch", "rnn", "arch"), ("conv_method", "wavelet", "conv_method"),
     ("patch_size", 0, "patch_size"), ("d_global", 30, "d_global"),
     ("d_local", 10, "d_local"), ("n_heads", 2.5, "n_heads"), ("n_layers", True, "n_layers"),
     ("bk_channels", -1, "bk_channels"), ("curvature", -1.0, "curvature"),
     ("curvature", "1", "curvature"), ("max_step", 0.0, "max_step"),
     ("max_radius", 38.0, "max_radius"), ("dropout", 1.0, "dropout")],
)
def test_bad_config_names_the_field(field: str, value: object, match: str) -> None:
    bad = dataclasses.replace(MICRO, **{field: value})
    with pytest.raises(ValueError, match=match):
        bad.validate()
    with pytest.raises(ValueError, match=match):
        build_model(bad)


def test_fields_are_plain_values_that_round_trip_through_json() -> None:
    for cfg in (ModelConfig(), *MODEL_PRESETS.values()):
        cfg.validate()
        data = json.loads(json.dumps(dataclasses.asdict(cfg)))
        assert ModelConfig(**data) == cfg
        assert all(isinstance(v, (str, int, float, bool, type(None))) for v in data.values())


@pytest.mark.parametrize("preset", sorted(MODEL_PRESETS))
def test_baseline_matches_parameter_count(preset: str) -> None:
    cfg = MODEL_PRESETS[preset]
    base = baseline_config(cfg)
    assert base.arch == "transformer" and cfg.arch == "megabyte"
    with torch.device("meta"), debug_checks(False):  # counts only
        n_bk, n_tr = build_model(cfg).num_parameters(), build_model(base).num_parameters()
    assert abs(n_tr - n_bk) <= 0.1 * n_bk, (n_bk, n_tr)


def test_presets_build_and_run_the_tiny_one() -> None:
    assert set(MODEL_PRESETS) >= {"tiny", "small", "base"}
    model = build_model(MODEL_PRESETS["tiny"])
    assert model.loss(torch.randint(0, 256, (1, 64))).isfinite()
