"""Training test setup: makes the helpers in this folder importable and keeps corpus caches
out of the user's ~/.cache."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session", autouse=True)
def _corpus_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNETBK_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield
