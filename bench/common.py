"""Shared pieces of the GPU benchmarks: timing, the copy-bandwidth ceiling, result files.

Each benchmark writes ``bench/results/<name>_<gpu>.json`` through :func:`write_results`, which
adds the card, the software versions, the date and the git revision, so a number is never
separated from what it was measured on.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def git_rev() -> str:
    out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def time_ms(fn: Callable[[], object], reps: int = 30, warmup: int = 3, group: int = 10) -> float:
    """Median milliseconds per call. On a GPU each sample times ``group`` back-to-back calls
    between two CUDA events, so the host's launch overhead overlaps the device work as it does
    in a training loop (a single call between events would add the host time before the
    launch to the measurement); on a CPU, wall clock per call."""
    for _ in range(warmup):
        fn()
    times = []
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        for _ in range(reps):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(group):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / group)
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth(nbytes: int = 2**30) -> float:
    """Bytes/s of a device-to-device copy moving ``nbytes`` in total (half read, half written):
    the ceiling that memory-bound kernels are reported against."""
    x = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    return nbytes / (time_ms(lambda: y.copy_(x), reps=30) * 1e-3)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def write_results(name: str, payload: dict) -> Path:
    """Write ``payload`` plus provenance to bench/results/<name>_<gpu>.json; return the path."""
    card = device_name()
    report = {
        "benchmark": name,
        "device": card,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_rev(),
        **payload,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}_{slug(card)}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
