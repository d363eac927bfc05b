"""Command-line interface: ``resnetbk <command>``."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import sys

import torch

import resnetbk


def _package_version(name: str) -> str:
    """Installed version without importing the package (cupy's import is slow)."""
    if importlib.util.find_spec(name.split("-")[0]) is None:
        return "not installed"
    for dist in (name, f"{name}-cuda12x", f"{name}-cuda11x"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "installed (version unknown)"


def _backend_table() -> list[tuple[str, str, str]]:
    """(op, backend, why) for every geometry op: all run on the torch reference today."""
    if torch.cuda.is_available():
        why = "no fused Triton kernel exists yet for this op; runs as torch ops on CUDA"
    else:
        why = "CPU tensors always use the exact torch reference"
    ops = (
        "poincare.mobius_add", "poincare.mobius_matvec", "poincare.expmap0", "poincare.logmap0",
        "poincare.dist", "lorentz.dist", "lorentz.cdist", "lorentz.expmap0", "lorentz.logmap0",
    )
    return [(op, "torch", why) for op in ops]


def cmd_info(args: argparse.Namespace) -> int:
    print(f"resnetbk {resnetbk.__version__}")
    print(f"python   {platform.python_version()} ({sys.executable})")
    print(f"torch    {torch.__version__}")
    print(f"triton   {_package_version('triton')}")
    print(f"cupy     {_package_version('cupy')}")
    print(f"debug checks: {'on' if resnetbk.debug_enabled() else 'off'} (RESNETBK_DEBUG=1 or "
          "resnetbk.debug_checks())")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"device cuda:{i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, "
                  f"sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
    else:
        print(f"device cpu: {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads (no CUDA device)")
    print("backends:")
    for op, backend, why in _backend_table():
        print(f"  {op:<24} {backend:<7} {why}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnetbk", description="Hyperbolic-geometry-native deep learning."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="versions, devices and which backend each op uses")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
