"""SpecProp on GPUs (issue 8, docs/SPECPROP.md): the byte language model, ``small`` preset, cut
into two stages after half of its global blocks (stage 0: byte embedding and the first global
blocks; the head: the other global blocks, the local model and the loss).

**One GPU** (default): backprop against SpecProp (default settings: correction "difference",
delay 1), run stage after stage and with one CUDA stream per stage.

1. Step time: wall time of ``--reps`` consecutive steps divided by their number, after warm-up,
   synchronised only at both ends (so overlap between steps counts).
2. Bits per byte after a fixed budget: each method trains ``--budget`` seconds from the same
   initialisation on the same batches (AdamW as ``resnetbk train``, linear warm-up then a
   cosine by elapsed time, bf16 autocast, no gradient clipping in any method), then
   validation bpb on the same windows.

**Two GPUs** (``--two-gpu`` under ``torchrun --nproc-per-node 2``): stage 0 on GPU 0, the head
on GPU 1. SpecProp (one stage per process, update unlocking) against a synchronous pipeline
with GPipe micro-batches (``--micro-batches``). Each trains ``--budget`` seconds (evaluation
excluded) with a validation loss every ``--eval-every`` steps; the target is the worse of the
two final losses, and the result is the training time each method needs to reach it.

Results go to ``bench/results/specprop_gpu_<gpu>.json`` (sections ``single_gpu`` and
``two_gpu``; a run replaces its own section). ``--smoke``: a tiny model on the CPU (gloo for
``--two-gpu``) for a few seconds, to test the logic. Usage (about 5 minutes each):

    python bench/specprop_gpu.py
    torchrun --nproc-per-node 2 bench/specprop_gpu.py --two-gpu
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from common import RESULTS, device_name, git_rev, slug

from resnetbk.data.corpus import iter_windows, load_corpus, sample_windows
from resnetbk.model import MODEL_PRESETS, ModelConfig, build_model
from resnetbk.train.config import TRAIN_PRESETS, TrainConfig
from resnetbk.train.evaluate import LN2, evaluate_bpb
from resnetbk.train.lm import build_optimizers, lr_multiplier
from resnetbk.train.specprop import SpecProp, SpecPropConfig, split_lm
from resnetbk.train.specprop_dist import SpecPropRunner, pipeline_loss, run_gpipe

SEED = 0


def settings(smoke: bool) -> tuple[ModelConfig, TrainConfig]:
    """The model and training settings: the ``small`` presets (warm-up shortened to fit the
    budget), or a tiny CPU model for ``--smoke``."""
    if smoke:
        model = dataclasses.replace(MODEL_PRESETS["tiny"], n_global_layers=2, d_global=32,
                                    d_local=16, byte_dim=8, n_heads=2)
        return model, TrainConfig(batch_size=4, seq_len=64, lr=3e-3, min_lr=3e-4,
                                  warmup_steps=2)
    return MODEL_PRESETS["small"], dataclasses.replace(TRAIN_PRESETS["small"], warmup_steps=50)


class Run:
    """Everything the methods share: settings, device, data, the schedule."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        self.model_cfg, self.cfg = settings(args.smoke)
        corpus = load_corpus(args.data)
        self.train_split, self.val_split = corpus.split("train"), corpus.split("val")
        self.corpus = corpus.description
        self.amp = device.type == "cuda"

    def model(self) -> torch.nn.Module:
        """A fresh model, the same initialisation every time (built on the CPU)."""
        torch.manual_seed(SEED)
        return build_model(self.model_cfg)

    def cut(self) -> list[int]:
        return [self.model_cfg.n_global_layers // 2]

    def batch(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(SEED * 1_000_003 + step)
        return sample_windows(self.train_split, self.cfg.batch_size, self.cfg.seq_len, g)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast("cuda", torch.bfloat16) if self.amp else contextlib.nullcontext()

    def set_lr(self, optimizers: list[torch.optim.Optimizer], step: int, elapsed: float) -> None:
        """Scale every group's initial learning rate by the schedule at ``step``."""
        mult = lr_multiplier(step, self.cfg, elapsed / self.args.budget)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * mult

    def optimizers(self, module: torch.nn.Module) -> dict[str, torch.optim.Optimizer]:
        return build_optimizers(module, self.cfg, self.device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


# -- one GPU ----------------------------------------------------------------------------------


def single_gpu_methods(run: Run) -> dict[str, Callable[[], tuple[Callable, Callable, Callable]]]:
    """name -> builder of (step(step_index, elapsed), finish(), model) for a fresh model."""

    def backprop() -> tuple[Callable, Callable, Callable]:
        model = run.model().to(run.device)
        opts = list(run.optimizers(model).values())

        def step(i: int, elapsed: float) -> torch.Tensor:
            run.set_lr(opts, i, elapsed)
            x = run.batch(i).to(run.device, non_blocking=True)
            with run.autocast():
                loss = model.loss(x)
            loss.backward()
            for opt in opts:
                opt.step()
                opt.zero_grad(set_to_none=True)
            return loss.detach()

        return step, lambda: None, lambda: model

    def specprop(streams: bool) -> Callable[[], tuple[Callable, Callable, Callable]]:
        def build() -> tuple[Callable, Callable, Callable]:
            model = run.model().to(run.device)
            body, head, dims = split_lm(model, run.cut())
            sp = SpecProp(body, head, dims, run.optimizers, SpecPropConfig(), streams=streams)

            def step(i: int, elapsed: float) -> torch.Tensor:
                run.set_lr(sp.optimizers(), i, elapsed)
                x = run.batch(i).to(run.device, non_blocking=True)
                with run.autocast():
                    return sp.step(x, x)

            return step, sp.flush, lambda: model

        return build

    methods = {"backprop": backprop, "specprop": specprop(False)}
    if run.device.type == "cuda":
        methods["specprop_streams"] = specprop(True)
    return methods


def single_gpu(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {}
    args = run.args
    for name, build in single_gpu_methods(run).items():
        step, finish, model = build()
        for i in range(args.warmup):
            step(i, 0.0)
        run.sync()
        t0 = time.perf_counter()
        for i in range(args.reps):
            loss = step(args.warmup + i, 0.0)
        run.sync()
        step_s = (time.perf_counter() - t0) / args.reps
        del step, finish, model
        # Training for a fixed budget, from scratch.
        step, finish, model = build()
        losses, i, elapsed = [], 0, 0.0
        t0 = time.perf_counter()
        while elapsed < args.budget:
            loss = step(i, elapsed)
            i += 1
            if i % 10 == 0:
                run.sync()  # the loss is read on the default stream
                losses.append(float(loss))
                elapsed = time.perf_counter() - t0
        finish()
        run.sync()
        if not all(math.isfinite(v) for v in losses):
            raise FloatingPointError(f"{name}: the training loss became non-finite: {losses}")
        bpb, ci, windows = evaluate_bpb(model(), run.val_split, run.cfg.seq_len,
                                        run.cfg.batch_size, args.val_windows,
                                        autocast=torch.bfloat16 if run.amp else None)
        out[name] = {"step_s": step_s, "bytes_per_s": run.cfg.batch_size * run.cfg.seq_len
                     / step_s, "budget_s": args.budget, "steps": i, "val_bpb": bpb,
                     "val_ci95": ci, "val_windows": windows,
                     "train_bpb_last": losses[-1] / LN2 if losses else None}
        print(f"{name:18s} step {step_s * 1e3:8.1f} ms  {i} steps in {args.budget:.0f} s  "
              f"val bpb {bpb:.4f} ± {ci:.4f}", flush=True)
        del step, finish, model
        if run.device.type == "cuda":
            torch.cuda.empty_cache()
    base = out["backprop"]
    for r in out.values():
        r["step_time_vs_backprop"] = r["step_s"] / base["step_s"]
    return out


# -- two GPUs ---------------------------------------------------------------------------------


def _chunks(run: Run, start: int, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for i in range(start, start + count):
        x = run.batch(i)
        yield x, x


def two_gpu(run: Run) -> dict[str, Any] | None:
    """Both methods; the head rank returns the results, the other rank None."""
    rank = dist.get_rank()
    head = rank == 1
    args = run.args
    val = [(x, x) for x in iter_windows(run.val_split, run.cfg.seq_len, run.cfg.batch_size,
                                        max_windows=args.val_windows)]
    # Untimed warm-up on a throwaway model: kernel compilation, point-to-point connections.
    warm_body, warm_head, _ = split_lm(run.model(), run.cut())
    warm = (warm_head if head else warm_body[0]).to(run.device)
    with run.autocast():
        run_gpipe(warm, run.optimizers(warm), _chunks(run, 0, 2), run.device,
                  args.micro_batches, head=head)
    del warm_body, warm_head, warm
    curves: dict[str, list[dict[str, float]]] = {}
    for name in ("specprop", "gpipe"):
        model = run.model()
        body, head_module, dims = split_lm(model, run.cut())
        stage = (head_module if head else body[0]).to(run.device)
        if name == "specprop":
            sp = SpecProp(body, head_module, dims, run.optimizers, SpecPropConfig())
            opts = sp.optimizers()  # (those of the other rank's stage are idle here)
            runner = SpecPropRunner(sp, run.device)

            def train(start: int, count: int, runner: SpecPropRunner = runner
                      ) -> list[torch.Tensor]:
                return runner.train(_chunks(run, start, count))
        else:
            stage_opts = run.optimizers(stage)
            opts = list(stage_opts.values())

            def train(start: int, count: int, stage_opts: dict = stage_opts,
                      stage: torch.nn.Module = stage) -> list[torch.Tensor]:
                return run_gpipe(stage, stage_opts, _chunks(run, start, count), run.device,
                                 args.micro_batches, head=head)
        curve, step, elapsed = [], 0, 0.0
        status = torch.zeros(2, dtype=torch.float64, device=run.device)  # elapsed, stop
        while True:
            run.set_lr(opts, step, float(status[0]))
            dist.barrier()
            t0 = time.perf_counter()
            with run.autocast():
                losses = train(step, args.eval_every)
            run.sync()
            step += args.eval_every
            if head:
                elapsed += time.perf_counter() - t0
                status[0], status[1] = elapsed, float(elapsed >= args.budget)
            dist.broadcast(status, src=1)
            with run.autocast():
                loss = pipeline_loss(stage, val, run.device, head=head)
            if head:
                last = float(torch.stack(losses).float().mean())
                curve.append({"step": step, "train_s": elapsed, "val_loss": loss,
                              "train_loss": last})
                print(f"{name:8s} step {step:5d}  {elapsed:6.1f} s  train {last:.4f}  "
                      f"val {loss:.4f}", flush=True)
                if not (math.isfinite(last) and math.isfinite(loss)):
                    raise FloatingPointError(f"{name}: non-finite loss at step {step}")
            if status[1]:
                break
        if name == "specprop":
            runner.flush()
        curves[name] = curve
        del model, body, head_module, stage, opts, train
        if run.device.type == "cuda":
            torch.cuda.empty_cache()
    if not head:
        return None
    target = max(c[-1]["val_loss"] for c in curves.values())
    out: dict[str, Any] = {"target_val_loss": target, "target_val_bpb": target / LN2,
                           "micro_batches": args.micro_batches, "eval_every": args.eval_every}
    for name, curve in curves.items():
        hit = next(p for p in curve if p["val_loss"] <= target)
        out[name] = {"time_to_target_s": hit["train_s"], "steps_to_target": hit["step"],
                     "steps": curve[-1]["step"], "train_s": curve[-1]["train_s"],
                     "step_s": curve[-1]["train_s"] / curve[-1]["step"],
                     "final_val_loss": curve[-1]["val_loss"], "curve": curve}
    out["time_saved_vs_gpipe"] = 1 - (out["specprop"]["time_to_target_s"]
                                      / out["gpipe"]["time_to_target_s"])
    print(f"target val loss {target:.4f}: specprop {out['specprop']['time_to_target_s']:.1f} s,"
          f" gpipe {out['gpipe']['time_to_target_s']:.1f} s, time saved "
          f"{out['time_saved_vs_gpipe']:.1%}", flush=True)
    return out


# -- main -------------------------------------------------------------------------------------


def write(path: Path, section: str, result: dict[str, Any], run: Run) -> None:
    """Replace ``section`` of the JSON at ``path`` (other sections are kept)."""
    report = json.loads(path.read_text()) if path.exists() else {}
    report.update({"benchmark": "specprop_gpu", "device": device_name()})
    report[section] = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "git": git_rev(), "torch": torch.__version__,
        "corpus": run.corpus, "model": dataclasses.asdict(run.model_cfg),
        "batch_size": run.cfg.batch_size, "seq_len": run.cfg.seq_len, "lr": run.cfg.lr,
        "warmup_steps": run.cfg.warmup_steps, "specprop": dataclasses.asdict(SpecPropConfig()),
        "cut": run.cut(), **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {section} to {path}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--two-gpu", action="store_true", help="run under torchrun, 2 processes")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU, seconds")
    ap.add_argument("--budget", type=float, default=None, help="training seconds per method")
    ap.add_argument("--reps", type=int, default=None, help="timed steps (one GPU)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (one GPU)")
    ap.add_argument("--eval-every", type=int, default=None, help="steps (two GPUs)")
    ap.add_argument("--micro-batches", type=int, default=4, help="GPipe (two GPUs)")
    ap.add_argument("--val-windows", type=int, default=None)
    ap.add_argument("--data", nargs="*", default=None, help="corpus files (default: stdlib)")
    ap.add_argument("--out", type=Path, default=None, help="result JSON path")
    args = ap.parse_args(argv)
    for key, real, smoke in (("budget", 100.0, 2.0), ("reps", 20, 2), ("eval_every", 25, 2),
                             ("val_windows", 32, 4)):
        if getattr(args, key) is None:
            setattr(args, key, smoke if args.smoke else real)
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --smoke")
    if args.two_gpu:
        backend = "gloo" if args.smoke else "nccl"
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cpu") if args.smoke else torch.device(f"cuda:{local}")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=5))
        if dist.get_world_size() != 2:
            raise SystemExit("--two-gpu needs exactly 2 processes (torchrun --nproc-per-node 2)")
    else:
        device = torch.device("cpu" if args.smoke else "cuda")
    if args.two_gpu and dist.get_rank() > 0:
        dist.barrier()  # rank 0 builds the corpus cache first
    run = Run(args, device)
    if args.two_gpu and dist.get_rank() == 0:
        dist.barrier()
    if args.smoke:
        torch.set_num_threads(1)
    path = args.out or RESULTS / f"specprop_gpu_{slug(device_name())}.json"
    try:
        if args.two_gpu:
            result = two_gpu(run)
            if result is not None:
                write(path, "two_gpu", result, run)
        else:
            write(path, "single_gpu", single_gpu(run), run)
    finally:
        if args.two_gpu:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
