"""Command-line interface: ``resnetbk <command>``."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import platform
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import resnetbk

if TYPE_CHECKING:
    from resnetbk.train.config import RunConfig


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
    """(op, path, why) for each dispatched op, as it runs on this machine for float32 tensors
    of its default device (CUDA tensors on CUDA machines; CPU tensors otherwise)."""
    from resnetbk.bk import green
    from resnetbk.kernels import dispatch

    cuda = torch.cuda.is_available()
    probe = torch.zeros(1, device="cuda" if cuda else "cpu")
    try:
        fused = dispatch.use_kernels(probe)
        reason = ("CUDA tensor, backend " + dispatch.requested_backend()) if fused else (
            "CPU tensors always use the exact torch reference" if not cuda else
            f"{dispatch.ENV_VAR}=torch or triton not installed")
    except (RuntimeError, ValueError) as exc:  # a bad RESNETBK_BACKEND: say so in the table
        fused, reason = False, str(exc)
    rows = [(op, kind if fused else "torch", what if fused else reason)
            for op, (kind, what) in dispatch.FUSED_PATHS.items()]
    if cuda and "triton" in green._BACKENDS:
        rows.append(("bk.causal_green", "triton",
                     "chunked Triton scan and adjoint kernels (torch.library custom ops)"))
    else:
        rows.append(("bk.causal_green", "torch", "chunked torch scan (" + (
            "triton not installed)" if cuda else "CPU tensors)")))
    if cuda and dispatch.triton_installed():
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
        print(f"  {op:<28} {backend:<8} {why}")
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


class _StderrHandler(logging.Handler):
    """Log records as plain lines on the current ``sys.stderr`` (tests replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def _show_info_logs() -> None:
    """Show resnetbk's INFO logs (e.g. "building the corpus cache", which takes a while)."""
    logger = logging.getLogger("resnetbk")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.INFO)


def _user_error(command: str, message: str) -> int:
    """One clear line on stderr (no traceback) and exit code 2."""
    print(f"resnetbk {command}: error: {message}", file=sys.stderr)
    return 2


def _resolve_run(args: argparse.Namespace) -> RunConfig:
    """The run config from (checkpoint on --resume | --preset) < --config < --data < KEY=VALUE.

    Items of --data that look like KEY=VALUE and are not existing paths are overrides, so
    ``--data a.txt lr=1e-3`` works as a user would expect.
    """
    from resnetbk.train.checkpoint import find_checkpoint, read_state
    from resnetbk.train.config import RunConfig, apply_overrides, load_config, run_preset

    overrides = list(args.overrides)
    data = None
    if args.data is not None:
        data = []
        for item in args.data:
            if "=" in item and not Path(item).exists():
                overrides.append(item)
            else:
                data.append(str(Path(item).resolve()))
    if args.resume and args.preset is None and find_checkpoint(args.out) is not None:
        run = RunConfig.from_dict(read_state(args.out)[1]["config"])
    else:
        run = run_preset(args.preset or "tiny")
    if args.config is not None:
        run = load_config(args.config, base=run)
    if data:
        run.data = data
    return apply_overrides(run, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    """Train the byte language model (``resnetbk train``)."""
    from resnetbk.train.checkpoint import CheckpointError
    from resnetbk.train.config import ConfigError, format_config
    from resnetbk.train.lm import TrainingDiverged, train_lm

    _show_info_logs()
    try:
        run = _resolve_run(args)
        if args.print_config:
            print(format_config(run), end="")
            return 0
        summary = train_lm(run, args.out, resume=args.resume)
    except (ConfigError, CheckpointError) as e:
        return _user_error("train", str(e))
    except TrainingDiverged as e:
        print(f"resnetbk train: training diverged\n{e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    if summary["status"] == "interrupted":
        code = 143 if summary.get("signal") == signal.SIGTERM else 130
        print(f"interrupted after step {summary['steps']}: checkpoint written to "
              f"{summary['checkpoint']}\nresume with: resnetbk train --out {out} --resume",
              file=sys.stderr)
        return code
    why = " (time budget reached)" if summary["status"] == "time_budget" else ""
    print(f"final val bpb {summary['final_val_bpb']:.4f} ± {summary['final_val_ci95']:.4f} "
          f"(95% CI over {summary['final_val_windows']} windows of {run.train.seq_len} bytes) "
          f"after {summary['steps']} steps{why}, {summary['bytes_seen']:,} bytes seen, "
          f"{summary['train_time_s']:.0f} s of training")
    print(f"wrote {out / 'summary.json'}, {out / 'metrics.jsonl'}"
          + (f", {summary['plot']}" if summary.get("plot") else "")
          + f" and {summary['checkpoint']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Bits per byte of a checkpoint on a split (``resnetbk eval``)."""
    import json

    from resnetbk.train.checkpoint import CheckpointError, load_trained_model
    from resnetbk.train.config import ConfigError
    from resnetbk.train.evaluate import evaluate_bpb
    from resnetbk.train.lm import autocast_dtype, load_run_corpus, manifest_id, resolve_device

    _show_info_logs()
    try:
        if args.max_windows is not None and args.max_windows < 2:
            raise ConfigError(f"--max-windows must be >= 2, got {args.max_windows}")
        device = resolve_device(args.device)
        model, run, state = load_trained_model(args.checkpoint, device)
        if args.data is not None:
            run.data = [str(Path(p).resolve()) for p in args.data]
        corpus = load_run_corpus(run)
        seq_len = args.seq_len or run.train.seq_len
        multiple = getattr(model, "seq_multiple", 1)
        if seq_len < 1 or seq_len % multiple:
            raise ConfigError(f"--seq-len must be a positive multiple of {multiple} (the "
                              f"model's patch size), got {seq_len}")
        batch = args.batch_size or run.train.batch_size
        if batch < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch}")
        trained_on = state.get("data", {}).get("manifest_id")
        if args.data is None and trained_on != manifest_id(corpus):
            print("warning: the corpus differs from the one this model was trained on "
                  f"(manifest {trained_on} -> {manifest_id(corpus)}, e.g. another Python's "
                  "stdlib): its splits may overlap the training data", file=sys.stderr)
        try:
            bpb, ci, n = evaluate_bpb(model, corpus.split(args.split), seq_len, batch,
                                      args.max_windows,
                                      autocast=autocast_dtype(run.train.autocast, device))
        except ValueError as e:  # too few windows in the split
            raise ConfigError(f"{args.split} split: {e}") from None
    except (ConfigError, CheckpointError) as e:
        return _user_error("eval", str(e))
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "step": state["step"],
                          "split": args.split, "bpb": bpb, "ci95": ci, "windows": n,
                          "seq_len": seq_len, "data": corpus.description}))
    else:
        print(f"{args.split} bpb {bpb:.4f} ± {ci:.4f} (95% CI over {n} windows of {seq_len} "
              f"bytes; checkpoint step {state['step']}; {corpus.description})")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Stream bytes sampled from a checkpoint (``resnetbk generate``)."""
    import time

    from resnetbk.train.checkpoint import CheckpointError, load_trained_model
    from resnetbk.train.config import ConfigError
    from resnetbk.train.lm import resolve_device

    try:
        if args.bytes < 0:
            raise ConfigError(f"--bytes must be >= 0, got {args.bytes}")
        if not args.temperature >= 0:
            raise ConfigError(f"--temperature must be >= 0 (0: greedy), got {args.temperature}")
        if args.top_k is not None and not 1 <= args.top_k <= 256:
            raise ConfigError(f"--top-k must be in 1..256, got {args.top_k}")
        device = resolve_device(args.device)
        model, _, state = load_trained_model(args.checkpoint, device)
    except (ConfigError, CheckpointError) as e:
        return _user_error("generate", str(e))
    prompt = torch.tensor(list(args.prompt.encode("utf-8")), dtype=torch.long, device=device)
    gen = torch.Generator().manual_seed(args.seed)  # ByteLM.generate samples on the CPU
    out = sys.stdout.buffer
    n, first = 0, None
    t0 = time.perf_counter()
    stream = model.generate(prompt, args.bytes, temperature=args.temperature,
                            top_k=args.top_k, generator=gen)
    with torch.no_grad():
        try:
            for byte in stream:
                out.write(bytes((byte,)))
                out.flush()
                n += 1
                first = first if first is not None else time.perf_counter() - t0
        except ValueError as e:  # the model rejects the prompt (checked as generation starts)
            return _user_error("generate", str(e))
    dt = time.perf_counter() - t0
    rate = f"{n / dt:.1f} bytes/s" if dt > 0 else "n/a"
    print(f"\n[{n} bytes in {dt:.2f} s: {rate}; first byte after {first or 0:.2f} s; "
          f"checkpoint step {state['step']}, {device}]", file=sys.stderr)
    return 0


def _add_lm_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the ResNet-BK byte language model",
        description="Train the byte language model on the Python standard library source "
        "(default) or your own files. Settings come from --preset, then --config, then "
        "--data, then KEY=VALUE overrides (train.lr=3e-4, model.geometry=euclidean, or a "
        "bare key such as lr=3e-4 when unambiguous; --print-config lists every key). "
        "Writes checkpoints/, metrics.jsonl, config.toml, summary.json and bpb.png into "
        "--out. Ctrl-C saves a checkpoint; --resume continues it exactly. See "
        "docs/TRAINING.md.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="tiny (CPU demo, default), small or base (GPU); on --resume the "
                   "default is the checkpoint's config")
    p.add_argument("--data", nargs="+", default=None, metavar="PATH",
                   help="files or folders of text (default: the Python stdlib source)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML or YAML run config (keys it omits keep the preset's values)")
    p.add_argument("--out", default="runs/lm", help="output directory (runs/lm)")
    p.add_argument("--resume", action="store_true",
                   help="continue the checkpoint in --out (refuses model/data changes)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as TOML and exit")
    p.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "eval", help="bits per byte of a checkpoint, with a 95%% confidence interval",
        description="Score a checkpoint on a split of its training corpus (or --data): mean "
        "bits per byte over disjoint windows, with a Student-t 95%% interval over windows.",
    )
    e.add_argument("checkpoint", metavar="CKPT", help="run directory or checkpoint directory")
    e.add_argument("--split", choices=("val", "test"), default="test", help="split (test)")
    e.add_argument("--data", nargs="+", default=None, metavar="PATH",
                   help="evaluate on this corpus instead of the training one")
    e.add_argument("--max-windows", type=int, default=None, metavar="N",
                   help="at most N windows, spread evenly over the split (default: all)")
    e.add_argument("--seq-len", type=int, default=None, metavar="N",
                   help="window length (default: the training seq_len)")
    e.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="windows per forward pass (default: the training batch size)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    e.add_argument("--json", action="store_true", help="print one JSON object instead")
    e.set_defaults(func=cmd_eval)

    g = sub.add_parser(
        "generate", help="stream bytes sampled from a checkpoint",
        description="Sample bytes after --prompt and write them to stdout as they are "
        "produced (raw bytes); the count and bytes/s go to stderr.",
    )
    g.add_argument("checkpoint", metavar="CKPT", help="run directory or checkpoint directory")
    g.add_argument("--prompt", required=True, help="prompt text (UTF-8)")
    g.add_argument("--bytes", type=int, default=256, help="bytes to generate (256)")
    g.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature, 0 = greedy (0.8)")
    g.add_argument("--top-k", type=int, default=None, help="sample among the K likeliest bytes")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.set_defaults(func=cmd_generate)


def _read_lorentz(args: argparse.Namespace) -> torch.Tensor:
    """The 4x4 Lorentz matrix of ``resnetbk optics compile/simulate``: a JSON or whitespace
    file of 16 numbers, or ``--random RAPIDITY`` (raises ValueError with a clear message)."""
    import json

    from resnetbk.optics import random_lorentz

    if (args.matrix is None) == (args.random is None):
        raise ValueError("give either a matrix file or --random RAPIDITY (not both)")
    if args.random is not None:
        g = torch.Generator().manual_seed(args.seed)
        return random_lorentz(torch.tensor(args.random, dtype=torch.float64), generator=g)
    text = Path(args.matrix).read_text()
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        try:
            values = [float(t) for t in text.split()]
        except ValueError:
            raise ValueError(f"{args.matrix}: not JSON and not whitespace-separated "
                             "numbers") from None
    L = torch.tensor(values, dtype=torch.float64)
    if L.numel() != 16:
        raise ValueError(f"{args.matrix}: a Lorentz matrix has 16 entries (4x4, time first), "
                         f"got {L.numel()}")
    return L.reshape(4, 4)


def _hardware_from_args(args: argparse.Namespace):  # -> resnetbk.optics.HardwareModel
    from resnetbk.optics import HardwareModel

    return HardwareModel(angle_error=args.angle_error, retardance_error=args.retardance_error,
                         extinction_ratio=args.extinction_ratio,
                         insertion_loss=args.insertion_loss, photons=args.photons,
                         dark_counts=args.dark_counts, adc_bits=args.adc_bits,
                         calibration_error=args.calibration_error)


def cmd_optics(args: argparse.Namespace) -> int:
    """``resnetbk optics compile | simulate | evaluate``."""
    from resnetbk.optics import compile_lorentz

    name = f"optics {args.optics_command}"
    if args.optics_command == "evaluate":
        return _optics_evaluate(args)
    try:
        L = _read_lorentz(args)
        program = compile_lorentz(L)
        hw = _hardware_from_args(args) if args.optics_command == "simulate" else None
    except (ValueError, OSError) as e:
        return _user_error(name, str(e))
    torch.set_printoptions(precision=6, sci_mode=False)
    print(f"Lorentz matrix (rapidity {float(torch.asinh(L[1:, 0].norm())):.6g}):\n{L}")
    print(program.describe())
    if hw is None:
        return 0
    return _optics_simulate(L, program, hw, args)


def _optics_simulate(L: torch.Tensor, program, hw, args: argparse.Namespace) -> int:
    """Simulate ``program`` ideal and on one instance of ``hw``; print errors and throughput."""
    from resnetbk.geometry import lorentz as hyp
    from resnetbk.optics import mueller_to_lorentz
    from resnetbk.optics.layers import stokes_to_tangent
    from resnetbk.optics.mueller import propagate

    scale = float(L.abs().max())
    ideal = float((mueller_to_lorentz(program.mueller()) - L).abs().max()) / scale
    g = torch.Generator().manual_seed(args.seed)
    inst = hw.sample(g)
    real = inst.realise(program)
    hw_err = float((real.lorentz() - L).abs().max()) / scale
    print(f"ideal program: max|L_sim - L| / max|L| = {ideal:.3g}, transmission "
          f"{float(program.transmission):.6g}")
    print(f"hardware instance: max|L_hw - L| / max|L| = {hw_err:.3g}, transmission "
          f"{float(real.transmission):.6g}, realisable at extinction ratio "
          f"{hw.extinction_ratio:g}: {bool(program.realisable(hw.extinction_ratio))}")
    v = torch.randn(args.samples, 3, generator=g, dtype=torch.float64) * args.radius / 3**0.5
    x = hyp.expmap0(torch.cat([torch.zeros_like(v[:, :1]), v], -1), c=1.0)
    s = propagate(real.mueller(), inst.encode(v))
    if hw.photons is not None or hw.adc_bits is not None:
        s = inst.readout(s, g)
    u, stats = stokes_to_tangent(s, max_rapidity=args.max_readout_rapidity)
    y = hyp.expmap0(torch.cat([torch.zeros_like(u[:, :1]), u], -1), c=1.0)
    err = hyp.dist(y, x @ L.mT, c=1.0)
    print(f"{args.samples} encoded points (|v| ~ {args.radius:g}) through the instance and its "
          f"polarimeter: hyperbolic distance to L x mean {float(err.mean()):.4g}, max "
          f"{float(err.max()):.4g}; readout rule applied to {stats.dark} dark + {stats.clipped} "
          f"clipped of {stats.readouts}")
    return 0


def _optics_evaluate(args: argparse.Namespace) -> int:
    """Run the issue-7 evaluation (``--quick``: seconds) and write JSON + PNG plots."""
    import json

    from resnetbk.optics.evaluate import EvalConfig, plot, run_evaluation

    results = run_evaluation(EvalConfig.quick() if args.quick else EvalConfig())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "optics_eval.json").write_text(json.dumps(results, indent=1) + "\n")
    pngs = plot(results, out)
    clean = results["classifier"]["clean"]
    nominal = results["classifier"]["sweeps"]["nominal"][0]
    print("test accuracy (mean ± std): software {:.3f} ± {:.3f}, ideal optics {:.3f} ± {:.3f}, "
          "nominal hardware {:.3f} ± {:.3f} (ideal-trained) / {:.3f} ± {:.3f} (noise-aware)"
          .format(clean["software"]["mean"], clean["software"]["std"], clean["ideal"]["mean"],
                  clean["ideal"]["std"], nominal["ideal"]["mean"], nominal["ideal"]["std"],
                  nominal["noise_aware"]["mean"], nominal["noise_aware"]["std"]))
    print(f"wrote {out / 'optics_eval.json'} and {', '.join(str(p) for p in pngs)} "
          f"({results['seconds']['total']:.0f} s)")
    return 0


def _add_optics(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "optics", help="optical Poincaré core: compile, simulate, evaluate",
        description="Compile a Lorentz matrix to waveplates and a partial polariser, simulate "
        "it on sampled hardware, or run the evaluation of docs/OPTICS.md.")
    osub = p.add_subparsers(dest="optics_command", required=True, metavar="SUBCOMMAND")
    for name, help_text in (("compile", "print the optical program of a Lorentz matrix"),
                            ("simulate", "compile, then simulate on a sampled hardware "
                             "instance: reproduction error and transmission")):
        q = osub.add_parser(name, help=help_text, description=help_text)
        q.add_argument("matrix", nargs="?", default=None, metavar="FILE",
                       help="4x4 Lorentz matrix (time first) as JSON or 16 whitespace-separated "
                       "numbers")
        q.add_argument("--random", type=float, default=None, metavar="RAPIDITY",
                       help="a random Lorentz matrix of this rapidity instead of FILE")
        q.add_argument("--seed", type=int, default=0, help="seed for --random and hardware (0)")
        q.set_defaults(func=cmd_optics)
    q = osub.choices["simulate"]
    q.add_argument("--photons", type=float, default=None, help="photons per readout (none)")
    q.add_argument("--angle-error", type=float, default=0.0, help="rad, std (0)")
    q.add_argument("--retardance-error", type=float, default=0.0, help="rad, std (0)")
    q.add_argument("--extinction-ratio", type=float, default=float("inf"),
                   help="polariser extinction ratio (inf)")
    q.add_argument("--insertion-loss", type=float, default=0.0, help="per element (0)")
    q.add_argument("--dark-counts", type=float, default=0.0, help="per detector (0)")
    q.add_argument("--adc-bits", type=int, default=None, help="ADC bits (none)")
    q.add_argument("--calibration-error", type=float, default=0.0, help="polarimeter (0)")
    q.add_argument("--samples", type=int, default=1000, help="encoded test points (1000)")
    q.add_argument("--radius", type=float, default=1.0, help="their typical radius (1)")
    q.add_argument("--max-readout-rapidity", type=float, default=4.0,
                   help="readout rule: P >= tanh of this is clipped (4)")
    e = osub.add_parser("evaluate", help="run the evaluation (digits classifier, distortion, "
                        "energy ledger) and write PNG plots",
                        description="Run the issue-7 evaluation; --quick takes seconds.")
    e.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    e.add_argument("--out", default="runs/optics-eval", help="output folder (runs/optics-eval)")
    e.set_defaults(func=cmd_optics)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnetbk", description="Hyperbolic-geometry-native deep learning."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="versions, devices and which backend each op uses")
    info.set_defaults(func=cmd_info)
    _add_embed_tree(sub)
    _add_lm_commands(sub)
    _add_optics(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
