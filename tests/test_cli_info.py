"""`resnetbk info` and `--help` tell the truth about this machine."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from resnetbk import cli


def test_info_reports_versions_device_and_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch    {torch.__version__}" in out
    assert "triton" in out and "cupy" in out
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in out
    else:
        assert "no CUDA device" in out
    backend_lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert backend_lines, "no backend table"
    rows = {line.split()[0]: line.split()[1] for line in backend_lines}
    # Geometry ops: the reference on CPU; on CUDA the fused path kernels/dispatch.py names.
    from resnetbk.kernels.dispatch import FUSED_PATHS

    for op, (kind, _) in FUSED_PATHS.items():
        assert rows[op] == (kind if torch.cuda.is_available() else "torch"), op
    # BK ops name the backend their dispatch really picks for a tensor of this machine.
    from resnetbk.bk import GreenTable, causal_green, green

    device = "cuda" if torch.cuda.is_available() else "cpu"
    picked = []
    real = green._BACKENDS.copy()
    for name, (fwd, bwd) in real.items():
        green._BACKENDS[name] = (lambda *a, n=name, f=fwd: (picked.append(n), f(*a))[1], bwd)
    try:
        causal_green(torch.zeros(1, 4, device=device), torch.zeros(1, 4, device=device), 1j)
    finally:
        green._BACKENDS.update(real)
    assert rows["bk.causal_green"] == picked[0]
    import importlib.util

    has_triton = importlib.util.find_spec("triton") is not None
    assert rows["bk.GreenTable"] == ("triton" if device == "cuda" and has_triton else "torch")
    assert GreenTable.heat(1.0)(torch.zeros(3, device=device)).shape == (3,)


def test_help_lists_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "resnetbk.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "info" in result.stdout


def test_unknown_command_fails() -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["no-such-command"])
    assert excinfo.value.code == 2
