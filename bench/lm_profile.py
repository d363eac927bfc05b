"""Where the hyperbolic language model's extra step time goes (issue 5, end to end): one
optimizer step of the ``small`` preset (Lorentz) and of its Euclidean ablation, profiled with
``torch.profiler`` on one CUDA device (bf16 autocast, batch 8 x 8192 bytes, as
``bench/lm_gpu.py``).

For each model: median step time (wall clock between synchronisations, 5 steps after 3
warm-up steps), then 3 steps under the profiler: GPU kernel time per step by kernel name (top
``--top``); then the kernels only the Lorentz model runs and the largest per-name differences.
Results: ``bench/results/lm_profile_<gpu>.json`` and text tables on stdout. ``--smoke``: the
``tiny`` preset on the CPU at 512 bytes (CPU op times, nothing written), to test the script.
``--compile``: each loss ``torch.compile``d whole (as ``train.compile=true``). Usage:
``python bench/lm_profile.py [--compile]`` (about 1-2 minutes).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import statistics
import time
from collections.abc import Callable

import torch
from common import RESULTS, device_name, git_rev, slug
from torch.profiler import ProfilerActivity, profile

from resnetbk.model import MODEL_PRESETS, build_model
from resnetbk.model.config import ModelConfig
from resnetbk.train.config import TRAIN_PRESETS
from resnetbk.train.lm import build_optimizers


def step_fn(cfg: ModelConfig, batch: int, context: int, device: torch.device,
            compile_loss: bool) -> Callable[[], None]:
    """One training step on random bytes (bf16 autocast on CUDA), as a closure; the loss
    ``torch.compile``d as a whole if ``compile_loss`` (``train.compile=true``)."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    # The trainer's optimizers: a plain AdamW would run its per-tensor loop for the Lorentz
    # model only (torch's foreach and fused paths refuse the ManifoldParameter pad).
    opts = build_optimizers(model, TRAIN_PRESETS["small"], device).values()
    x = torch.randint(0, 256, (batch, context), device=device)
    loss_fn = torch.compile(model.loss) if compile_loss else model.loss

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(x)
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_step_s(step: Callable[[], None], device: torch.device, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kernel_times(step: Callable[[], None], device: torch.device,
                 steps: int = 3) -> dict[str, float]:
    """Seconds per step by kernel name (CUDA) or by op name (CPU, self time)."""
    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    out: dict[str, float] = collections.defaultdict(float)
    for ev in prof.events():
        if device.type == "cuda":
            if ev.device_type == torch.autograd.DeviceType.CUDA:
                out[ev.name] += ev.device_time / 1e6 / steps
        else:
            out[ev.name] += ev.self_cpu_time_total / 1e6 / steps
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile each model's whole loss (results: *_compiled.json)")
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    preset = MODEL_PRESETS["tiny" if args.smoke else "small"]
    batch, context = (2, 512) if args.smoke else (8, 8192)
    configs = {"lorentz": preset, "euclidean": dataclasses.replace(preset, geometry="euclidean")}
    result: dict = {"benchmark": "lm_profile", "device": device_name(), "git": git_rev(),
                    "torch": torch.__version__,
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds"), "batch": batch, "context": context,
                    "compiled_loss": args.compile, "models": {}}
    for name, cfg in configs.items():
        step = step_fn(cfg, batch, context, device, args.compile)
        for _ in range(3):
            step()
        step_s = median_step_s(step, device)
        kernels = kernel_times(step, device)
        result["models"][name] = {"step_s": step_s, "kernel_s": sum(kernels.values()),
                                  "kernels": kernels}
        print(f"{name:10s} step {step_s * 1e3:8.2f} ms   profiled "
              f"{'GPU kernel' if device.type == 'cuda' else 'CPU op'} time "
              f"{sum(kernels.values()) * 1e3:8.2f} ms/step", flush=True)
    lor, euc = (result["models"][k]["kernels"] for k in ("lorentz", "euclidean"))
    only = {k: v for k, v in lor.items() if k not in euc}
    more = {k: lor.get(k, 0.0) - euc.get(k, 0.0) for k in lor.keys() | euc.keys()}
    result["lorentz_only_s"] = sum(only.values())
    result["lorentz_more_s"] = more
    result["ratio_step"] = result["models"]["lorentz"]["step_s"] / result["models"][
        "euclidean"]["step_s"]
    print(f"\nstep time Lorentz / Euclidean: {result['ratio_step']:.2f}x; kernels only the "
          f"Lorentz model runs: {result['lorentz_only_s'] * 1e3:.2f} ms/step")
    for title, table in (("Lorentz", lor), ("Euclidean", euc), ("only in Lorentz", only),
                         ("Lorentz minus Euclidean", more)):
        print(f"\n{title}: top {args.top} (ms/step)")
        for k, v in sorted(table.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {v * 1e3:8.3f}  {k[:110]}")
    if not args.smoke:
        suffix = "_compiled" if args.compile else ""
        path = RESULTS / f"lm_profile_{slug(result['device'])}{suffix}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
