"""Fixtures of the kernel tests.

Every test here takes ``device``: on a CUDA machine the kernels run compiled on the GPU; on a
CPU machine they run under Triton's interpreter, which must be switched on before triton is
first imported. So in the ordinary CPU run these tests skip, and ``test_interpreted.py`` runs
this whole folder again in one subprocess started with ``TRITON_INTERPRET=1``, failing if any
of them fails there.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@pytest.fixture
def device() -> str:
    if torch.cuda.is_available() and not INTERPRETED:
        return "cuda"
    if INTERPRETED:
        return "cpu"
    pytest.skip("kernel tests run in the TRITON_INTERPRET=1 subprocess (test_interpreted.py)")


@pytest.fixture
def fast_modes(device: str) -> tuple[bool, ...]:
    """The FAST settings to test: the PTX path exists only on the GPU (the interpreter runs
    neither inline PTX nor libdevice), the portable path everywhere."""
    return (False, True) if device == "cuda" else (False,)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The interpreter evaluates both sides of every ``tl.where`` in numpy, which warns about
    the Inf/NaN computed in the side that is not selected (e.g. r / t at t = 0): expected."""
    here = os.path.dirname(__file__)
    quiet = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(quiet)
