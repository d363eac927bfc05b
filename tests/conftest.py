"""Shared test fixtures.

Every run draws fresh random inputs: the seed comes from RESNETBK_TEST_SEED when set (to
reproduce a failure) or from the OS, and is printed in the report header.
"""

from __future__ import annotations

import os
import secrets
import zlib

import pytest
import torch

SEED = int(os.environ.get("RESNETBK_TEST_SEED", secrets.randbits(31)))
# Subprocess test runs (e.g. the interpreted kernel tests) inherit the seed, so one value
# reproduces a failure anywhere in the run.
os.environ["RESNETBK_TEST_SEED"] = str(SEED)


def pytest_report_header(config: pytest.Config) -> str:
    return f"resnetbk test seed: {SEED} (reproduce with RESNETBK_TEST_SEED={SEED})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    """The seed again after a failure: ``-q`` hides the report header."""
    if exitstatus != 0:
        terminalreporter.write_line(pytest_report_header(config))


@pytest.fixture
def gen(request: pytest.FixtureRequest) -> torch.Generator:
    """A CPU generator seeded from the run seed and the test's name (fresh inputs each run)."""
    g = torch.Generator()
    g.manual_seed(SEED ^ zlib.crc32(request.node.nodeid.encode()))
    return g


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
