"""Training loop of the byte language model (``resnetbk train``).

Design points (details and rationale in docs/TRAINING.md):

- **Stateless randomness.** The batch of step ``s`` is ``sample_windows(train, B, T, g)`` with
  ``g`` seeded from ``(seed, s)``, and the global torch RNG (dropout, if a model uses it) is
  reseeded from ``(seed, s)`` before the step. A resumed run therefore sees exactly the
  batches and random draws of an uninterrupted one; only weights, optimizer moments and the
  step count live in the checkpoint.
- **Optimizers.** ``ManifoldParameter``s on a non-Euclidean manifold go to ``RiemannianAdam``
  (no weight decay: an L2 pull of ambient coordinates has no meaning on a manifold); every
  other parameter to ``AdamW``, with decoupled weight decay on >= 2-D weights only (matrices
  and embeddings; biases, gains and scalars such as a learnable curvature are not decayed).
  Both follow one schedule: linear warm-up, then a cosine to ``min_lr``.
- **Failure.** A non-finite loss or gradient norm stops the run before the optimizer step,
  with a diagnosis; no checkpoint is written, so the last good one stays current. SIGINT /
  SIGTERM finish the current step, write a checkpoint and stop (a second signal kills).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

import numpy as np
import torch
from torch import nn

from resnetbk.data.corpus import Corpus, load_corpus, sample_windows
from resnetbk.model import MegaByteLM, build_model
from resnetbk.nn import ManifoldParameter
from resnetbk.optim import RiemannianAdam
from resnetbk.optim._common import manifold_of
from resnetbk.train.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_extra_state,
    load_optimizer_states,
    load_weights,
    read_state,
    save_checkpoint,
)
from resnetbk.train.config import (
    ConfigError,
    RunConfig,
    TrainConfig,
    resume_differences,
    save_config,
)
from resnetbk.train.evaluate import LN2, autocast_context, evaluate_bpb
from resnetbk.train.specprop import SpecProp, split_lm

__all__ = [
    "TrainingDiverged",
    "autocast_dtype",
    "build_optimizers",
    "load_run_corpus",
    "lr_multiplier",
    "manifest_id",
    "plot_metrics",
    "read_metrics",
    "resolve_device",
    "train_lm",
]

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "bpb.png"
CONFIG_FILE = "config.toml"


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/Inf; the message holds the diagnosis."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but this machine has no CUDA device "
                          "(use device=auto or device=cpu)")
    return torch.device(name)


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.autocast``: bf16 on CUDA under "auto", None for "off"."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def lr_multiplier(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Learning rate of the update of step ``step`` (0-based) as a fraction of the peak.

    Linear warm-up to 1 over ``warmup_steps`` (the first update already gets 1/warmup), then
    a cosine from 1 to ``min_lr / lr`` at ``steps``. ``time_fraction`` (training time spent /
    ``time_budget_s``) advances the cosine when it is ahead of the step count, so that a
    time-budgeted run anneals by the end of its budget.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, max((step - cfg.warmup_steps) / span, time_fraction))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizers(model: nn.Module, cfg: TrainConfig,
                     device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """AdamW for Euclidean parameters (decay on >= 2-D only) and, when the model has
    manifold parameters, RiemannianAdam for them. Keys: ``"adamw"``, ``"riemannian"``."""
    manifold, decay, no_decay = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if isinstance(p, ManifoldParameter) and manifold_of(p) is not None:
            manifold.append(p)
        elif p.ndim >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    optimizers: dict[str, torch.optim.Optimizer] = {
        "adamw": torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                   fused=device.type == "cuda"),
    }
    if manifold:
        optimizers["riemannian"] = RiemannianAdam(manifold, lr=_manifold_lr(cfg),
                                                  betas=cfg.betas, eps=cfg.eps)
    return optimizers


def _specprop(model: nn.Module, cfg: TrainConfig,
              device: torch.device) -> tuple[SpecProp, dict[str, torch.optim.Optimizer]]:
    """``train.specprop``: the model as two SpecProp stages (cut after half of its global
    blocks), and every optimizer of the stages by name for the schedule and the checkpoint:
    "stage0.adamw", "stage0.spec.adamw" (speculative steps), "head.adamw", ... "riemannian"."""
    if not isinstance(model, MegaByteLM):
        raise ConfigError("train.specprop=true needs model.arch=megabyte")
    body, head, dims = split_lm(model, [max(1, len(model.global_blocks) // 2)])
    stage_names = {id(m): f"stage{i}" for i, m in enumerate(body)} | {id(head): "head"}
    named: dict[str, torch.optim.Optimizer] = {}

    def optimizers(module: nn.Module) -> dict[str, torch.optim.Optimizer]:
        opts = build_optimizers(module, cfg, device)
        prefix = stage_names[id(module)]
        if any(key.startswith(f"{prefix}.") for key in named):  # the second set: speculative
            prefix += ".spec"
        named.update({f"{prefix}.{key}": opt for key, opt in opts.items()})
        return opts

    return SpecProp(body, head, dims, optimizers), named


def _manifold_lr(cfg: TrainConfig) -> float:
    return cfg.lr if cfg.manifold_lr is None else cfg.manifold_lr


def manifest_id(corpus: Corpus) -> str:
    """Short hash of the corpus manifest: equal ids mean the same files and splits."""
    text = json.dumps(corpus.manifest, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _seed_for(seed: int, step: int, stream: int) -> int:
    """A well-mixed 63-bit seed for (run seed, step, stream)."""
    state = np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def _fmt_rate(bytes_per_s: float) -> str:
    for unit, scale in (("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_s >= scale:
            return f"{bytes_per_s / scale:.1f} {unit}"
    return f"{bytes_per_s:.0f} B/s"


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _StopSignal:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step; the
    handler then restores the previous one, so a second signal acts immediately."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        signal.signal(signum, self._previous.pop(signum, signal.SIG_DFL))

    def __enter__(self) -> _StopSignal:
        if threading.current_thread() is threading.main_thread():  # signals: main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class _Progress:
    """A tqdm bar on a terminal; otherwise plain lines every ``log_every`` steps."""

    def __init__(self, total: int, initial: int, stream: TextIO) -> None:
        self.stream = stream
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, file=stream, unit="step",
                            dynamic_ncols=True, leave=True)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def status(self, text: str, line: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
        else:
            self.write(line)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Metrics:
    """``metrics.jsonl``: one JSON object per event, flushed as written."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        kept: list[str] = []
        if resume_step is not None and path.is_file():
            # Events after the checkpoint would be logged again: drop them (and a line cut
            # short by a crash), so the file reads as one uninterrupted run.
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
        path.write_text("".join(line + "\n" for line in kept))
        self.file = open(path, "a")  # noqa: SIM115 (closed by close())

    def write(self, event: dict[str, Any]) -> None:
        self.file.write(json.dumps(event) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The events of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(metrics_path: str | Path, png_path: str | Path, title: str = "") -> None:
    """Train and validation bits per byte against step and against bytes seen (PNG).
    Needs matplotlib (the ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, LogLocator, NullLocator

    events = read_metrics(metrics_path)
    train = [e for e in events if e["event"] == "train"]
    val = [e for e in events if e["event"] == "val"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label in ((axes[0], "step", "step"), (axes[1], "bytes_seen", "bytes seen")):
        ax.plot([e[key] for e in train], [e["bpb"] for e in train], lw=1, label="train")
        if val:
            ax.errorbar([e[key] for e in val], [e["bpb"] for e in val],
                        yerr=[e["ci95"] for e in val], fmt="o-", ms=3, capsize=2,
                        label="validation (95% CI over windows)")
        ax.set_xlabel(label)
        ax.set_ylabel("bits per byte")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[1].set_xscale("log")
    # Ticks at 1, 2, 5 x 10^k with engineering labels (kB, MB): readable on any range.
    axes[1].xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes[1].xaxis.set_minor_locator(NullLocator())
    axes[1].xaxis.set_major_formatter(EngFormatter(unit="B"))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def _diagnose(model: nn.Module, step: int, lr: float, loss: float, grad_norm: float,
              last_finite: tuple[int, float] | None) -> str:
    """Why the run stopped: which parameters have non-finite gradients or values, and the
    largest finite gradient norms."""
    lines = [f"non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} at step "
             f"{step + 1}: loss {loss}, gradient norm {grad_norm}, learning rate {lr:.3g}"]
    if last_finite is not None:
        lines.append(f"last finite loss: {last_finite[1]:.4f} at step {last_finite[0]}")
    bad_grad, bad_value, norms = [], [], []
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            bad_value.append(name)
        if p.grad is None:
            continue
        finite = torch.isfinite(p.grad)
        if not bool(finite.all()):
            bad_grad.append(f"{name} ({int((~finite).sum())}/{p.grad.numel()} entries)")
        else:
            norms.append((float(p.grad.norm()), name))
    if bad_value:
        lines.append(f"parameters with non-finite values: {', '.join(bad_value[:10])}")
    if bad_grad:
        lines.append(f"parameters with non-finite gradients ({len(bad_grad)}): "
                     f"{', '.join(bad_grad[:10])}")
    if norms:
        top = sorted(norms, reverse=True)[:5]
        lines.append("largest finite gradient norms: "
                     + ", ".join(f"{n} {v:.3g}" for v, n in top))
    return "\n".join(lines)


def _check_data(corpus: Corpus, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    try:
        train, val = corpus.split("train"), corpus.split("val")
    except ValueError as e:  # an empty split or a cache changed under us
        raise ConfigError(str(e)) from None
    if len(train) < cfg.seq_len:
        raise ConfigError(f"the training split has {len(train)} bytes, fewer than one window "
                          f"of train.seq_len={cfg.seq_len}: use a shorter seq_len or more data")
    if len(val) // cfg.seq_len < 2:
        raise ConfigError(f"the validation split has {len(val)} bytes, fewer than two windows "
                          f"of train.seq_len={cfg.seq_len} (an interval needs two): use a "
                          "shorter seq_len, a larger val_fraction or more data")
    return train, val


def train_lm(
    run: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    corpus: Corpus | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the byte language model of ``run`` and return a summary dict.

    Writes into ``out_dir``: ``checkpoints/`` (``checkpoint.py``), ``metrics.jsonl``,
    ``config.toml`` (the resolved config), ``summary.json`` and ``bpb.png`` (with matplotlib).
    ``resume`` continues from the checkpoint there (refusing a config that changes the model
    or the data); without it, an existing checkpoint is an error. ``corpus`` defaults to
    ``load_corpus(run.data, ...)``. ``log`` receives information lines (default: stderr).

    The summary's ``status`` is ``"completed"``, ``"time_budget"`` or ``"interrupted"``
    (SIGINT/SIGTERM: checkpoint written, no final evaluation). Raises ``ConfigError`` /
    ``CheckpointError`` for bad settings, data or checkpoints (before training starts) and
    ``TrainingDiverged`` when the loss or gradient norm becomes non-finite.
    """
    run.validate()
    cfg = run.train
    out = Path(out_dir)
    existing = find_checkpoint(out) if out.exists() else None
    if resume and existing is None:
        raise ConfigError(f"--resume: {out} holds no checkpoint to resume from")
    if not resume and existing is not None:
        raise ConfigError(f"{out} already holds a checkpoint ({existing.name}); pass --resume to "
                          "continue it, or choose another output directory")
    state: dict[str, Any] | None = None
    if resume:
        ckpt, state = read_state(out)
        _check_resume(run, state, log or _stderr)

    device = resolve_device(cfg.device)
    amp = autocast_dtype(cfg.autocast, device)
    previous_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        if corpus is None:
            corpus = load_run_corpus(run)
        data_id = manifest_id(corpus)
        if state is not None and state.get("data", {}).get("manifest_id") != data_id:
            raise ConfigError(
                f"the training data changed since the checkpoint (corpus manifest "
                f"{state.get('data', {}).get('manifest_id')} -> {data_id}): resuming would not "
                "continue the same run; restore the data or start a new run")
        train_split, val_split = _check_data(corpus, cfg)
        torch.manual_seed(cfg.seed)
        model = build_model(run.model).to(device)
        multiple = getattr(model, "seq_multiple", 1)
        if cfg.seq_len % multiple:
            raise ConfigError(f"train.seq_len={cfg.seq_len} must be a multiple of {multiple} "
                              "(the model's patch size)")
        if cfg.specprop:
            sp, optimizers = _specprop(model, cfg, device)
        else:
            sp, optimizers = None, build_optimizers(model, cfg, device)
        if state is not None:
            load_weights(model, ckpt)
            load_optimizer_states(optimizers, ckpt)
            if sp is not None:
                sp_state = load_extra_state(ckpt, "specprop")
                try:
                    sp.load_state_dict(sp_state)
                except (ValueError, KeyError, RuntimeError) as e:
                    raise CheckpointError(f"{ckpt}: the SpecProp state does not fit: {e}") \
                        from None
        return _Trainer(run, out, model, optimizers, corpus, data_id, train_split, val_split,
                        device, amp, state, log, sp).run()
    finally:
        torch.set_num_threads(previous_threads)


def load_run_corpus(run: RunConfig) -> Corpus:
    """The corpus of ``run`` (``run.data``, or the stdlib corpus for None); unreadable or
    unusable data raises ``ConfigError`` with the loader's message."""
    try:
        return load_corpus(run.data, val_fraction=run.val_fraction,
                           test_fraction=run.test_fraction)
    except (ValueError, OSError) as e:  # the loader's user-facing errors (bad paths, no text)
        raise ConfigError(f"cannot use the data: {e}") from None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _check_resume(run: RunConfig, state: dict[str, Any], log: Callable[[str], None]) -> None:
    try:
        saved = RunConfig.from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"the checkpoint's config cannot be read by this version: {e}") \
            from None
    refused, warned = resume_differences(saved, run)
    if refused:
        raise ConfigError("cannot resume: these settings differ from the checkpoint and change "
                          "the model or the data: " + "; ".join(refused)
                          + " (start a new run in another directory instead)")
    for entry in warned:
        log(f"warning: resuming with a changed setting, the run will differ from an "
            f"uninterrupted one: {entry}")


class _Trainer:
    """State of one training session (``train_lm`` sets it up)."""

    def __init__(self, run: RunConfig, out: Path, model: nn.Module,
                 optimizers: dict[str, torch.optim.Optimizer], corpus: Corpus, data_id: str,
                 train_split: np.ndarray, val_split: np.ndarray, device: torch.device,
                 amp: torch.dtype | None, state: dict[str, Any] | None,
                 log: Callable[[str], None] | None, sp: SpecProp | None = None) -> None:
        self.run_config, self.cfg, self.out, self.model = run, run.train, out, model
        self.sp = sp
        self.optimizers, self.corpus, self.data_id = optimizers, corpus, data_id
        self.train_split, self.val_split = train_split, val_split
        self.device, self.amp = device, amp
        self.step = int(state["step"]) if state else 0
        self.start_step = self.step
        self.train_time = float(state.get("train_time_s", 0.0)) if state else 0.0
        self.last_val: dict[str, Any] | None = state.get("last_val") if state else None
        self.bytes_per_step = self.cfg.batch_size * self.cfg.seq_len
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.loss_fn = torch.compile(model.loss) if self.cfg.compile else model.loss
        self.progress = _Progress(self.cfg.steps, self.step, sys.stderr)
        self.log = log or self.progress.write
        out.mkdir(parents=True, exist_ok=True)
        self.metrics = _Metrics(out / METRICS_FILE, self.step if state else None)

    # -- one step -------------------------------------------------------------------------

    def _batch(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_seed_for(self.cfg.seed, step, 0))
        x = sample_windows(self.train_split, self.cfg.batch_size, self.cfg.seq_len, g)
        return x.to(self.device, non_blocking=True)

    def _set_lr(self, mult: float) -> float:
        for name, opt in self.optimizers.items():
            peak = _manifold_lr(self.cfg) if name.endswith("riemannian") else self.cfg.lr
            for group in opt.param_groups:
                group["lr"] = peak * mult
        return self.cfg.lr * mult

    def _train_step(self, last_finite: tuple[int, float] | None) -> tuple[float, float, float]:
        """One optimizer step (index ``self.step``); (loss, grad norm, lr)."""
        cfg = self.cfg
        budget_fraction = self.train_time / cfg.time_budget_s if cfg.time_budget_s else 0.0
        lr = self._set_lr(lr_multiplier(self.step, cfg, budget_fraction))
        x = self._batch(self.step)
        torch.manual_seed(_seed_for(cfg.seed, self.step, 1))
        if self.sp is not None:  # SpecProp steps each stage itself; no global gradient norm
            with autocast_context(self.device, self.amp):
                loss_v = float(self.sp.step(x, x))
            if not math.isfinite(loss_v):
                raise TrainingDiverged(_diagnose(self.model, self.step, lr, loss_v, math.nan,
                                                 last_finite))
            return loss_v, math.nan, lr
        with autocast_context(self.device, self.amp):
            loss = self.loss_fn(x)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip or math.inf)
        loss_v, norm_v = torch.stack([loss.detach().float(), norm.float()]).tolist()
        if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
            raise TrainingDiverged(_diagnose(self.model, self.step, lr, loss_v, norm_v,
                                             last_finite))
        for opt in self.optimizers.values():
            opt.step()
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        return loss_v, norm_v, lr

    # -- events ---------------------------------------------------------------------------

    def _validate(self, windows: int | None, final: bool) -> dict[str, Any]:
        bpb, ci, n = evaluate_bpb(self.model, self.val_split, self.cfg.seq_len,
                                  self.cfg.batch_size, windows, autocast=self.amp)
        event = {"event": "val", "step": self.step, "bytes_seen": self.step * self.bytes_per_step,
                 "bpb": bpb, "ci95": ci, "windows": n, "final": final}
        self.metrics.write(event)
        self.last_val = event
        self.progress.write(f"step {self.step:>7}  val bpb {bpb:.4f} ± {ci:.4f} "
                            f"({n} windows{', final' if final else ''})")
        return event

    def _save(self) -> Path:
        if self.sp is not None:  # no step in flight in a checkpoint (graphs cannot be saved)
            self.sp.flush()
        state = {
            "step": self.step,
            "config": self.run_config.to_dict(),
            "data": {"manifest_id": self.data_id, "description": self.corpus.description},
            "train_time_s": self.train_time,
            "bytes_seen": self.step * self.bytes_per_step,
            "last_val": self.last_val,
        }
        extra = {"specprop": self.sp.state_dict()} if self.sp is not None else None
        return save_checkpoint(self.out, model=self.model, optimizers=self.optimizers,
                               state=state, extra=extra)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        try:
            # The handler stays installed through the final evaluation and save: a Ctrl-C
            # there is noted and the (short) remaining work completes; a second one kills.
            with _StopSignal() as stop:
                return self._run(stop)
        finally:
            self.progress.close()
            self.metrics.close()

    def _run(self, stop: _StopSignal) -> dict[str, Any]:
        cfg, model_cfg = self.cfg, self.run_config.model
        wall0 = time.perf_counter()
        save_config(self.run_config, self.out / CONFIG_FILE)
        self.log(f"data: {self.corpus.description} (manifest {self.data_id})")
        self.log(f"model: {self.model.num_parameters():,} parameters, {model_cfg.arch}/"
                 f"{model_cfg.geometry}/{model_cfg.mixer}; optimizers: "
                 f"{', '.join(self.optimizers)}; device {self.device}, autocast "
                 f"{'bf16' if self.amp else 'off'}" + (", compiled" if cfg.compile else ""))
        if self.step:
            self.log(f"resuming from step {self.step} in {self.out}")
            self.metrics.write({"event": "resume", "step": self.step})
        status, session_time = "completed", 0.0
        interval = {"loss": 0.0, "n": 0, "time": 0.0}
        last_finite: tuple[int, float] | None = None
        while self.step < cfg.steps:
            if stop.received is not None:
                break
            if cfg.time_budget_s is not None and self.train_time >= cfg.time_budget_s:
                status = "time_budget"
                break
            t0 = time.perf_counter()
            try:
                loss, norm, lr = self._train_step(last_finite)
            except TrainingDiverged as e:
                self._diverged(e, wall0, session_time)
            dt = time.perf_counter() - t0
            self.step += 1
            self.train_time += dt
            session_time += dt
            last_finite = (self.step, loss)
            interval["loss"] += loss
            interval["n"] += 1
            interval["time"] += dt
            self.progress.step()
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self._log_train(interval, lr, norm)
                interval = {"loss": 0.0, "n": 0, "time": 0.0}
            if self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                self._validate(cfg.eval_windows, final=False)
            if self.step % cfg.ckpt_every == 0 and self.step < cfg.steps:
                self._save()
        signum = stop.received  # also set when the signal came during the last step
        if signum is not None:
            status = "interrupted"
        if self.sp is not None:
            self.sp.flush()
        final = None if signum is not None else self._validate(cfg.final_eval_windows, True)
        ckpt = self._save()
        self.metrics.close()
        plot = self._plot()
        return self._write_summary(status, wall0, session_time, final, checkpoint=ckpt,
                                   plot=plot, signal=signum)

    def _diverged(self, error: TrainingDiverged, wall0: float, session_time: float) -> NoReturn:
        """Record the divergence and raise it with where the last good checkpoint is."""
        kept = find_checkpoint(self.out)
        where = (f"the last good checkpoint ({kept.name}) in {self.out} is kept"
                 if kept else "no checkpoint had been written yet")
        msg = f"{error}\nstopped without writing a checkpoint: {where}"
        self.metrics.write({"event": "diverged", "step": self.step + 1,
                            "diagnosis": str(error)})
        self._write_summary("diverged", wall0, session_time, None, diagnosis=msg)
        raise TrainingDiverged(msg) from None

    def _log_train(self, interval: dict[str, float], lr: float, norm: float) -> None:
        cfg = self.cfg
        loss = interval["loss"] / interval["n"]
        rate = interval["n"] * self.bytes_per_step / max(interval["time"], 1e-9)
        eta = (cfg.steps - self.step) * interval["time"] / interval["n"]
        if cfg.time_budget_s is not None:
            eta = min(eta, max(0.0, cfg.time_budget_s - self.train_time))
        event = {"event": "train", "step": self.step, "bytes_seen": self.step * self.bytes_per_step,
                 "loss": loss, "bpb": loss / LN2, "lr": lr, "grad_norm": norm,
                 "bytes_per_s": rate, "train_time_s": self.train_time}
        self.metrics.write(event)
        text = (f"loss {loss:.4f}  bpb {loss / LN2:.4f}  lr {lr:.2e}  |g| {norm:.3g}  "
                f"{_fmt_rate(rate)}")
        self.progress.status(text, f"step {self.step:>7}/{cfg.steps}  {text}  ETA "
                             f"{_fmt_time(eta)}")

    def _plot(self) -> str | None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            self.log(f"matplotlib is not installed: skipping {PLOT_FILE} "
                     "(pip install 'resnetbk[plot]')")
            return None
        path = self.out / PLOT_FILE
        m = self.run_config.model
        plot_metrics(self.out / METRICS_FILE, path,
                     title=f"{m.arch}/{m.geometry}/{m.mixer}, "
                     f"{self.model.num_parameters():,} parameters; "
                     f"{self.corpus.description}")
        return str(path)

    def _write_summary(self, status: str, wall0: float, session_time: float,
                       final: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
        session_steps = self.step - self.start_step
        summary: dict[str, Any] = {
            "status": status,
            "steps": self.step,
            "target_steps": self.cfg.steps,
            "final_val_bpb": final["bpb"] if final else None,
            "final_val_ci95": final["ci95"] if final else None,
            "final_val_windows": final["windows"] if final else None,
            "bytes_seen": self.step * self.bytes_per_step,
            "train_time_s": self.train_time,
            "session_wall_s": time.perf_counter() - wall0,
            "bytes_per_s": (session_steps * self.bytes_per_step / session_time
                            if session_time > 0 else None),
            "parameters": self.model.num_parameters(),
            "device": str(self.device),
            "autocast": "bf16" if self.amp else "off",
            "data": {"manifest_id": self.data_id, "description": self.corpus.description},
            "config": self.run_config.to_dict(),
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in extra.items()},
        }
        (self.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        return summary

