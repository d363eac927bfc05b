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
    """(op, backend, why) for the ops that have or will have fused kernels, as dispatched on
    this machine (CUDA tensors on CUDA machines; CPU tensors otherwise)."""
    from resnetbk.bk import green

    cuda = torch.cuda.is_available()
    triton = importlib.util.find_spec("triton") is not None
    if cuda:
        why = "no fused Triton kernel exists yet for this op; runs as torch ops on CUDA"
    else:
        why = "CPU tensors always use the exact torch reference"
    ops = (
        "poincare.mobius_add", "poincare.mobius_matvec", "poincare.expmap0", "poincare.logmap0",
        "poincare.dist", "lorentz.dist", "lorentz.cdist", "lorentz.expmap0", "lorentz.logmap0",
    )
    rows = [(op, "torch", why) for op in ops]
    if cuda and "triton" in green._BACKENDS:
        rows.append(("bk.causal_green", "triton", "row-parallel Triton scan and adjoint kernels"))
    else:
        rows.append(("bk.causal_green", "torch", "chunked torch scan (" + (
            "triton not installed)" if cuda else "CPU tensors)")))
    if cuda and triton:
        rows.append(("bk.GreenTable", "triton", "Triton gather + lerp (float32/half)"))
    else:
        rows.append(("bk.GreenTable", "torch", "torch gather + lerp (" + (
            "triton not installed)" if cuda else "CPU tensors)")))
    return rows


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


def cmd_embed_tree(args: argparse.Namespace) -> int:
    """Embed a tree in hyperbolic and Euclidean space and compare (``resnetbk embed-tree``)."""
    from resnetbk.data.trees import balanced_tree, python_source_tree, stdlib_tree
    from resnetbk.train.tree_demo import run_demo
    from resnetbk.train.tree_embedding import MANIFOLDS, EmbeddingConfig

    try:  # invalid user input (an empty folder, a bad size) -> a one-line error, exit code 2
        if args.folder is not None:
            tree = python_source_tree(args.folder)
        elif args.tree == "stdlib":
            tree = stdlib_tree()
        else:
            tree = balanced_tree(args.branching, args.depth)
        config = EmbeddingConfig(dim=args.dim, steps=args.steps, seed=args.seed, lr=args.lr,
                                 loss=args.loss, log_every=args.log_every,
                                 threads=args.threads)
    except ValueError as e:
        print(f"resnetbk embed-tree: error: {e}", file=sys.stderr)
        return 2
    manifolds = list(MANIFOLDS) if "all" in args.manifold else list(dict.fromkeys(args.manifold))
    run_demo(tree, manifolds, args.out, base=config, plot=not args.no_plot)
    return 0


def _add_embed_tree(sub: argparse._SubParsersAction) -> None:
    from resnetbk.train.tree_embedding import EmbeddingConfig

    default = EmbeddingConfig()
    p = sub.add_parser(
        "embed-tree",
        help="embed a real tree (the stdlib's package hierarchy) in hyperbolic vs Euclidean space",
        description="Embed a tree's nodes in the Poincaré ball / Lorentz hyperboloid and in "
        "Euclidean space of the same dimension with the same budget, then compare distortion, "
        "mean rank and MAP on all pairs. Writes metrics.json and embedding.png into --out.",
    )
    p.add_argument("--tree", choices=("stdlib", "balanced"), default="stdlib",
                   help="stdlib: packages/modules/classes of this interpreter's standard "
                   "library (default); balanced: complete tree (--branching, --depth)")
    p.add_argument("--folder", default=None, metavar="DIR",
                   help="build the tree from this folder of Python sources instead")
    p.add_argument("--branching", type=int, default=3, help="balanced tree branching (3)")
    p.add_argument("--depth", type=int, default=5, help="balanced tree depth (5)")
    p.add_argument("--dim", type=int, default=default.dim, help="manifold dimension (2)")
    p.add_argument("--manifold", nargs="+", default=["poincare", "euclidean"],
                   choices=("poincare", "lorentz", "euclidean", "all"),
                   help="one or more manifolds (default: poincare euclidean)")
    p.add_argument("--steps", type=int, default=default.steps,
                   help=f"optimizer steps per manifold ({default.steps})")
    p.add_argument("--lr", type=float, default=None, help="learning rate (per-manifold default)")
    p.add_argument("--loss", choices=("ranking", "distortion", "both"), default=default.loss,
                   help=f"training loss ({default.loss})")
    p.add_argument("--seed", type=int, default=default.seed, help="random seed (0)")
    p.add_argument("--threads", type=int, default=default.threads,
                   help=f"torch CPU threads while training ({default.threads}: the ops are "
                   "small, more threads did not help)")
    p.add_argument("--log-every", type=int, default=default.log_every,
                   help=f"progress line every N steps ({default.log_every})")
    p.add_argument("--no-plot", action="store_true", help="do not draw embedding.png")
    p.add_argument("--out", default="runs/embed-tree", help="output folder (runs/embed-tree)")
    p.set_defaults(func=cmd_embed_tree)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnetbk", description="Hyperbolic-geometry-native deep learning."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="versions, devices and which backend each op uses")
    info.set_defaults(func=cmd_info)
    _add_embed_tree(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
