"""Geometry test setup: makes the shared helpers in ``_geo.py`` importable as ``_geo``."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
