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
    # No fused kernels exist yet: every op must say it runs the torch reference.
    assert all(" torch " in line for line in backend_lines)


def test_help_lists_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "resnetbk.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "info" in result.stdout


def test_unknown_command_fails() -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["no-such-command"])
    assert excinfo.value.code == 2
