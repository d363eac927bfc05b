"""Where the hyperbolic language model's extra step time goes (issue 5, end to end): one
optimizer step of the ``small`` preset (Lorentz) and of its Euclidean ablation, profiled with
``torch.profiler`` on one CUDA device (bf16 autocast, batch 8 x 8192 bytes, as
``bench/lm_gpu.py``).

For each model: median step time (wall clock between synchronisations, ``--rounds`` steps
after 3 warm-up steps, the two models taking turns), then 3 steps under the profiler: GPU
kernel time per step by kernel name (top ``--top``); then the kernels only the Lorentz model
runs and the largest per-name differences; then host (CPU) self time per step by op, where a
host-bound step's time goes.
Results: ``bench/results/lm_profile[_compiled]_<gpu>.json`` and text tables on stdout.
``--smoke``: the ``tiny`` preset on the CPU at 512 bytes (CPU op times, nothing written), to
test the script. ``--compile``: each loss ``torch.compile``d whole (as
``train.compile=true``). Usage: ``python bench/lm_profile.py [--compile]`` (about 1-2 minutes).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from common import write_results
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


def interleaved_step_times(steps: dict[str, Callable[[], None]], device: torch.device,
                           rounds: int) -> dict[str, list[float]]:
    """Seconds per step of each model, the models taking turns each round: a host-bound step's
    time drifts with the host's state, and taking turns exposes both models to the same drift
    (separate blocks of steps gave ratios from 1.0x to 1.36x on one H200 machine)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def profile_step(step: Callable[[], None], device: torch.device,
                 steps: int = 3) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per step by name: GPU kernel time by kernel (CUDA only) and host self time by
    op (where a host-bound step spends its time)."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    kernels: dict[str, float] = collections.defaultdict(float)
    host: dict[str, float] = collections.defaultdict(float)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            kernels[ev.name] += ev.device_time / 1e6 / steps
        else:
            host[ev.name] += ev.self_cpu_time_total / 1e6 / steps
    return dict(kernels), dict(host)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=20,
                        help="timed steps per model, the models taking turns")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile each model's whole loss "
                        "(results: lm_profile_compiled_*.json)")
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    preset = MODEL_PRESETS["tiny" if args.smoke else "small"]
    batch, context = (2, 512) if args.smoke else (8, 8192)
    configs = {"lorentz": preset, "euclidean": dataclasses.replace(preset, geometry="euclidean")}
    result: dict = {"batch": batch, "context": context, "compiled_loss": args.compile,
                    "models": {}}
    steps = {name: step_fn(cfg, batch, context, device, args.compile)
             for name, cfg in configs.items()}
    for step in steps.values():
        for _ in range(3):  # warm-up (compilation, autotuning, allocator)
            step()
    times = interleaved_step_times(steps, device, args.rounds)
    for name, step in steps.items():
        kernels, host = profile_step(step, device)
        if device.type != "cuda":
            kernels = host  # CPU: the ops' own time is the work
        q1, median, q3 = statistics.quantiles(times[name], n=4)
        result["models"][name] = {"step_s": median, "step_s_quartiles": [q1, q3],
                                  "step_s_all": times[name],
                                  "kernel_s": sum(kernels.values()),
                                  "kernels": kernels, "host_ops": host}
        print(f"{name:10s} step {median * 1e3:8.2f} ms (quartiles {q1 * 1e3:.2f}-"
              f"{q3 * 1e3:.2f})   profiled "
              f"{'GPU kernel' if device.type == 'cuda' else 'CPU op'} time "
              f"{sum(kernels.values()) * 1e3:8.2f} ms/step", flush=True)
    lor, euc = (result["models"][k]["kernels"] for k in ("lorentz", "euclidean"))
    lor_host, euc_host = (result["models"][k]["host_ops"] for k in ("lorentz", "euclidean"))
    only = {k: v for k, v in lor.items() if k not in euc}
    more = {k: lor.get(k, 0.0) - euc.get(k, 0.0) for k in lor.keys() | euc.keys()}
    result["lorentz_only_s"] = sum(only.values())
    result["lorentz_more_s"] = more
    result["ratio_step"] = result["models"]["lorentz"]["step_s"] / result["models"][
        "euclidean"]["step_s"]
    # Paired by round: both models' steps of one round saw the same host state.
    result["ratio_step_paired"] = statistics.median(
        a / b for a, b in zip(times["lorentz"], times["euclidean"], strict=True))
    print(f"\nstep time Lorentz / Euclidean: {result['ratio_step']:.2f}x (median of per-round "
          f"ratios {result['ratio_step_paired']:.2f}x); kernels only the "
          f"Lorentz model runs: {result['lorentz_only_s'] * 1e3:.2f} ms/step")
    host_more = {k: lor_host.get(k, 0.0) - euc_host.get(k, 0.0)
                 for k in lor_host.keys() | euc_host.keys()}
    for title, table in (("Lorentz", lor), ("Euclidean", euc), ("only in Lorentz", only),
                         ("Lorentz minus Euclidean", more),
                         ("host self time, Lorentz", lor_host),
                         ("host self time, Euclidean", euc_host),
                         ("host self time, Lorentz minus Euclidean", host_more)):
        print(f"\n{title}: top {args.top} (ms/step)")
        for k, v in sorted(table.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {v * 1e3:8.3f}  {k[:110]}")
    if not args.smoke:  # write_results adds the card, versions, date and git revision
        name = "lm_profile_compiled" if args.compile else "lm_profile"
        print(f"wrote {write_results(name, result)}")


if __name__ == "__main__":
    main()
