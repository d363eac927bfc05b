"""Run the kernel tests of this folder under Triton's interpreter (CPU machines).

Triton decides interpreted vs compiled when a kernel is decorated, so the switch has to be set
in a fresh process: one pytest subprocess with ``TRITON_INTERPRET=1`` runs every other test
file here on CPU tensors. Its exit code must be 0; 5 (nothing collected) fails too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
TIMEOUT_S = 900


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the kernel tests run compiled")
@pytest.mark.skipif(INTERPRETED, reason="this is the interpreted run")
def test_kernels_under_interpreter() -> None:
    here = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, (
        f"interpreted kernel tests failed (exit {result.returncode}):\n"
        f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    )
