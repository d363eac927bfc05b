"""Fixtures for the language-model tests: model initialisation draws from the run's fresh seed,
and tiny models run on one thread (see tests/nn/conftest.py for why)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # for ``_model_variants`` (tests run with --import-mode=importlib)
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def _seed_global_rng(gen: torch.Generator) -> None:
    """Seed torch's global RNG (layer initialisation) from the test's generator, so that
    RESNETBK_TEST_SEED reproduces a failing test completely."""
    torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
