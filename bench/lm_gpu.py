"""GPU comparison of the byte language models: ResNet-BK (Lorentz), ResNet-BK (Euclidean) and
the same-size Transformer baseline (issue 4, docs/RESULTS.md).

One CUDA device, bf16 autocast (as `resnetbk train` uses on GPU), the `small` preset for
ResNet-BK and ``baseline_config`` of it for the Transformer (parameter counts in the JSON):

1. **Training throughput** at context 8K and 64K bytes: one optimizer step (forward, backward,
   the trainer's optimizers: fused AdamW, RiemannianAdam for manifold parameters) on random
   bytes, bytes/s = batch x context / median step time (CUDA events, after
   warm-up), and peak memory (``torch.cuda.max_memory_allocated``). Batch 8 at 8K, 1 at 64K:
   the same bytes per step. A configuration that runs out of memory is recorded as such.
   The Lorentz model is measured twice: with the fused geometry kernels (``backend("auto")``,
   the default) and with the torch reference geometry (``backend("torch")``, entry
   ``resnetbk_lorentz_torch_geometry``): the end-to-end effect of ``resnetbk.kernels``.
2. **Generation**: bytes/s of ``generate`` (batch 1, cached state) for 512 new bytes after a
   64-byte prompt, greedy.
3. **Equal wall-clock training** (``--train-seconds S``, default 120): each model trained by
   ``train_lm`` on the default corpus (the GPU machine's stdlib) for S seconds of wall time,
   then validation bits per byte on the same validation windows.

Results: ``bench/results/lm_gpu_<gpu>.json``. Usage: ``python bench/lm_gpu.py
[--train-seconds 120] [--skip-train]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from resnetbk.kernels import dispatch
from resnetbk.model import MODEL_PRESETS, baseline_config, build_model
from resnetbk.model.config import ModelConfig
from resnetbk.train.config import TRAIN_PRESETS
from resnetbk.train.lm import build_optimizers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CONTEXTS = {8192: 8, 65536: 1}  # context bytes -> batch (same bytes per step)


def models() -> dict[str, ModelConfig]:
    """The three compared configurations, derived from the `small` preset."""
    bk = MODEL_PRESETS["small"]
    euclid = dataclasses.replace(bk, geometry="euclidean")
    return {"resnetbk_lorentz": bk, "resnetbk_euclidean": euclid,
            "transformer": baseline_config(bk)}


def git_rev() -> str:
    out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def step_throughput(cfg: ModelConfig, context: int, batch: int, reps: int = 20,
                    geometry_backend: str = "auto") -> dict:
    """Median optimizer-step time and peak memory at (batch, context), bf16 autocast."""
    torch.manual_seed(0)
    model = build_model(cfg).cuda()
    # The trainer's optimizers (fused AdamW; RiemannianAdam for the Lorentz pad). A plain
    # AdamW over model.parameters() would run its per-tensor loop for the Lorentz model only:
    # torch's foreach and fused paths refuse tensor subclasses such as ManifoldParameter.
    opts = build_optimizers(model, TRAIN_PRESETS["small"], torch.device("cuda")).values()
    x = torch.randint(0, 256, (batch, context), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16), dispatch.backend(geometry_backend):
            loss = model.loss(x)
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    try:
        for _ in range(2):
            step()
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    except torch.OutOfMemoryError:
        return {"context": context, "batch": batch, "oom": True}
    t = statistics.median(times)
    return {"context": context, "batch": batch, "step_s": t,
            "bytes_per_s": batch * context / t,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}


def generation_rate(cfg: ModelConfig, new_bytes: int = 512) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).cuda().eval()
    prompt = torch.randint(0, 256, (64,), device="cuda")
    for _ in model.generate(prompt, 16, temperature=0.0):  # warm-up
        pass
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = sum(1 for _ in model.generate(prompt, new_bytes, temperature=0.0))
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"new_bytes": n, "seconds": dt, "bytes_per_s": n / dt}


def train_for(name: str, cfg: ModelConfig, seconds: float, out: Path,
              preset: str = "small") -> dict:
    """Train on the default corpus for `seconds` of wall time at context 8K (batch 8, the
    throughput setting); the final validation bpb on the same validation windows for all."""
    from resnetbk.train.config import run_preset
    from resnetbk.train.lm import train_lm

    run = run_preset(preset)
    run.model = cfg
    if preset == "small":
        run.train.seq_len, run.train.batch_size = 8192, 8
        run.train.final_eval_windows = 128
    run.train.eval_every = 10**9  # no intermediate evaluations: all time goes to training
    run.train.time_budget_s = seconds
    summary = train_lm(run, out / name)
    keep = ("status", "steps", "final_val_bpb", "final_val_ci95", "final_val_windows",
            "bytes_seen", "train_time_s", "bytes_per_s", "parameters")
    return {"budget_s": seconds, **{k: summary.get(k) for k in keep}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-seconds", type=float, default=120.0)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true",
                        help="only the equal-wall-clock training; other entries of an "
                             "existing results file are kept")
    parser.add_argument("--models", nargs="*", default=None,
                        help="only these entries (default: all)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/lm_gpu.py needs a CUDA device")
    gpu = torch.cuda.get_device_name()
    result: dict[str, object] = {
        "gpu": gpu, "torch": torch.__version__, "python": sys.version.split()[0],
        "git": git_rev(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "models": {},
    }
    cfgs = models()
    slug = "".join(c if c.isalnum() else "_" for c in gpu.lower()).strip("_")
    path = RESULTS / f"lm_gpu_{slug}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)

    if args.skip_throughput and path.exists():
        previous = json.loads(path.read_text())
        result["models"] = previous.get("models", {})
        result["throughput_git"] = previous.get("git")

    def save() -> None:  # after every phase: a run cut short keeps what it measured
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")

    if args.models:
        cfgs = {k: v for k, v in cfgs.items() if k in args.models}
    runs = [(name, cfg, "auto") for name, cfg in cfgs.items()]
    if "resnetbk_lorentz" in cfgs:
        runs.append(("resnetbk_lorentz_torch_geometry", cfgs["resnetbk_lorentz"], "torch"))
    for name, cfg, mode in [] if args.skip_throughput else runs:
        entry: dict[str, object] = {"config": cfg.__dict__, "geometry_backend": mode,
                                    "parameters": build_model(cfg).num_parameters()}
        entry["throughput"] = [step_throughput(cfg, ctx, b, geometry_backend=mode)
                               for ctx, b in CONTEXTS.items()]
        if mode == "auto":
            entry["generation"] = generation_rate(cfg)
        result["models"][name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if k != "config"}), flush=True)
        torch.cuda.empty_cache()
        save()
    if not args.skip_train:
        with tempfile.TemporaryDirectory() as tmp:
            for name, cfg in cfgs.items():
                res = train_for(name, cfg, args.train_seconds, Path(tmp))
                result["models"].setdefault(name, {})["train"] = res
                print(name, "train", json.dumps(res, default=str), flush=True)
                save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
