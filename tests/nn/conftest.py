"""Fixtures for the layer tests: layer initialisation draws from the run's fresh seed too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_global_rng(gen: torch.Generator) -> None:
    """Seed torch's global RNG (used by layer initialisation) from the test's generator, so that
    RESNETBK_TEST_SEED reproduces a failing test completely."""
    torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The layer tests use tiny tensors: intra-op threads only add overhead, and on a loaded
    2-core machine OpenMP spin-waiting made a (180 x 8) @ (8 x 3) matmul take 10 ms instead
    of 30 us. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
