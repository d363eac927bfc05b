"""SpecProp with one stage per process (``torch.distributed``), and the synchronous baseline.

Rank r < n runs body stage r of a ``SpecProp`` wrapper, rank n its head (world size n + 1).
Every rank builds the same wrapper (same seed, same model), after moving only its own stage to
its device; it then executes only its stage, exchanging tensors point to point: stage outputs
upwards, gradients downwards. NCCL on GPUs (launch with ``torchrun``), gloo on CPUs.

The schedule is the one of ``SpecProp.step`` (docs/SPECPROP.md): stage r applies the true
gradient of step t after its forward of step t + D_r, so it blocks for that message at a fixed
point and the results equal the single-process ones; with ``delay >= 1`` a stage runs its
forward of step t + 1 while the stages above still work on step t (update unlocking: no
pipeline bubble after the first steps).

``run_gpipe`` is the baseline a pipeline without speculation would use: GPipe-style
micro-batches (every stage forwards all micro-batches, then backpropagates them, then all
stages step), which equals full-batch backprop up to the summation order of the gradient and
idles each stage for (n) / (m + n) of a step (bubble fraction for m micro-batches).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from resnetbk.train.specprop import SpecProp, _apply, _as_list

__all__ = ["Channel", "SpecPropRunner", "pipeline_loss", "run_gpipe", "run_specprop"]

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64)
_HEADER = 10  # dtype code, number of dimensions, up to 8 sizes


class Channel:
    """Point-to-point tensor messages of one rank. A tensor whose shape the receiver does not
    know travels after a header (dtype code, shape); ``swap`` exchanges tensors with a
    neighbour as one batched group. NCCL blocks a send on the GPU until the peer receives, so
    the callers keep every pair of ranks in step: per pair, the two sides post matching
    operations in the same order, and traffic in both directions at once is grouped.
    Unmatched sends are asynchronous and kept alive until complete (``close`` waits)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sends: list[tuple[Any, torch.Tensor]] = []  # (work, tensor kept alive)

    def _isend(self, x: torch.Tensor, dst: int) -> None:
        self.sends = [s for s in self.sends if not s[0].is_completed()]
        self.sends.append((dist.isend(x, dst), x))

    def send_header(self, x: torch.Tensor, dst: int) -> None:
        """Send the dtype and shape of ``x`` to ``dst`` (asynchronous)."""
        if x.ndim > _HEADER - 2:
            raise ValueError(f"messages have at most {_HEADER - 2} dimensions, got {x.ndim}")
        header = torch.zeros(_HEADER, dtype=torch.int64)
        header[0], header[1] = _DTYPES.index(x.dtype), x.ndim
        header[2:2 + x.ndim] = torch.tensor(x.shape, dtype=torch.int64)
        self._isend(header.to(self.device), dst)

    def _recv(self, x: torch.Tensor, src: int) -> None:
        dist.recv(x, src)

    def recv_header(self, src: int) -> torch.Tensor:
        """An empty tensor of the dtype and shape announced by ``src``."""
        header = torch.empty(_HEADER, dtype=torch.int64, device=self.device)
        self._recv(header, src)
        code, ndim, *shape = header.tolist()
        return torch.empty(shape[:ndim], dtype=_DTYPES[code], device=self.device)

    def send(self, x: torch.Tensor, dst: int) -> None:
        """Header and data of ``x`` to ``dst``, without waiting."""
        x = x.detach().contiguous()
        self.send_header(x, dst)
        self._isend(x, dst)

    def recv(self, src: int) -> torch.Tensor:
        """The next tensor ``src`` sent with ``send`` (blocks until it is here)."""
        x = self.recv_header(src)
        self._recv(x, src)
        return x

    def swap(self, send: tuple[torch.Tensor, int] | None,
             recv: tuple[torch.Tensor, int] | None) -> None:
        """Send ``send = (tensor, dst)`` and receive into ``recv = (buffer, src)`` as one group
        (either may be None); returns when both are done."""
        ops = []
        if send is not None:
            ops.append(dist.P2POp(dist.isend, send[0].detach().contiguous(), send[1]))
        if recv is not None:
            ops.append(dist.P2POp(dist.irecv, recv[0], recv[1]))
        if ops:
            for work in dist.batch_isend_irecv(ops):
                work.wait()

    def close(self) -> None:
        """Wait for every send of this rank to complete."""
        for work, _ in self.sends:
            work.wait()
        self.sends.clear()


def _rank(what: str) -> tuple[int, int]:
    """(rank, world size) of the initialised process group."""
    if not dist.is_initialized():
        raise ValueError(f"{what} needs an initialised torch.distributed process group")
    return dist.get_rank(), dist.get_world_size()


class SpecPropRunner:
    """This rank's stage of ``sp`` (rank r < n: body stage r, rank n: the head), trained over
    any number of ``train`` calls that continue one schedule; ``flush`` ends it.

    Messages per step t: h_r(t) goes up from rank r; the true gradient of step t - D_r comes
    down to it. With ``delay >= 1`` that gradient was computed in an earlier step, so each
    pair of neighbours exchanges both in one group (after the header of h); with ``delay=0``
    it is computed after h arrives, and the two alternate.
    """

    def __init__(self, sp: SpecProp, device: torch.device | str) -> None:
        n = len(sp.body)
        self.rank, world = _rank("SpecPropRunner")
        if world != n + 1:
            raise ValueError(f"the world size must be the number of stages ({n + 1}: {n} body "
                             f"stages and the head), got {world}")
        self.sp, self.device = sp, torch.device(device)
        self.chan = Channel(self.device)
        # Gradients for the stage below, by step, until that stage applies them.
        self.outbox: dict[int, torch.Tensor] = {}
        # NCCL: a batched point-to-point call must not be the group's first collective.
        dist.barrier()

    def _delay_below(self) -> int:
        return self.sp.body[self.rank - 1].delay

    def train(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """Train on ``batches`` (every rank iterates the same (x, y) sequence; x is used by
        rank 0, y by the head and by conditioned DGMs). Returns the head's losses per step
        (other ranks: empty). True gradients may still be in flight afterwards."""
        losses: list[torch.Tensor] = []
        step = self._locked if self.sp.config.delay == 0 else self._unlocked
        for x, y in batches:
            loss = step(x, y.to(self.device))
            if loss is not None:
                losses.append(loss)
            self.sp.t += 1
        return losses

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """The stage input of the current step: x on rank 0, else h from the rank below
        (exchanged with the gradient that rank applies now, when ``delay >= 1``)."""
        if self.rank == 0:
            return x.to(self.device)
        if self.sp.config.delay == 0:
            return self.chan.recv(self.rank - 1)
        h = self.chan.recv_header(self.rank - 1)
        s = self.sp.t - self._delay_below()
        down = (self.outbox.pop(s), self.rank - 1) if s in self.outbox else None
        self.chan.swap(down, (h, self.rank - 1))
        return h

    def _unlocked(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        sp, rank, t = self.sp, self.rank, self.sp.t
        h_in = self._input(x)
        if rank == len(sp.body):
            loss, self.outbox[t] = sp.head.step(h_in, y)
            return loss
        stage = sp.body[rank]
        context = sp.context_fn(y).detach() if sp.context_fn is not None else None
        h = stage.forward(t, h_in.requires_grad_(rank > 0), context)
        boot = stage.speculate(t)
        if boot is not None:
            self.outbox[t] = boot
        self.chan.send_header(h.detach(), rank + 1)
        s = t - stage.delay
        delta = torch.empty_like(stage.pending[s].h_out) if s in stage.pending else None
        self.chan.swap((h, rank + 1), None if delta is None else (delta, rank + 1))
        if delta is not None:
            self._arrived(s, delta)
        return None

    def _locked(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        sp, rank, chan, t = self.sp, self.rank, self.chan, self.sp.t
        h_in = self._input(x)
        if rank == len(sp.body):
            loss, delta = sp.head.step(h_in, y)
            chan.send(delta, rank - 1)
            return loss
        stage = sp.body[rank]
        context = sp.context_fn(y).detach() if sp.context_fn is not None else None
        chan.send(stage.forward(t, h_in.requires_grad_(rank > 0), context), rank + 1)
        boot = stage.speculate(t)
        if boot is not None:
            chan.send(boot, rank - 1)
        down = stage.arrive(t, chan.recv(rank + 1))
        if down is not None:
            chan.send(down, rank - 1)
        return None

    def _arrived(self, s: int, delta: torch.Tensor) -> None:
        down = self.sp.body[self.rank].arrive(s, delta)
        if down is not None:
            self.outbox[s] = down

    def flush(self) -> None:
        """Apply the true gradients still in flight (the schedule runs on without batches:
        each rank sends the gradients due below and receives its own) and wait for this
        rank's messages to be received."""
        sp, rank = self.sp, self.rank
        t = sp.t
        pending = sp.body[rank].pending if rank < len(sp.body) else {}
        while pending or self.outbox:
            s = t - self._delay_below() if rank > 0 else None
            if s in self.outbox:
                self.chan.swap((self.outbox.pop(s), rank - 1), None)
            s = t - sp.body[rank].delay if rank < len(sp.body) else None
            if s in pending:
                delta = torch.empty_like(pending[s].h_out)
                self.chan.swap(None, (delta, rank + 1))
                self._arrived(s, delta)
            t += 1
        self.chan.close()


def run_specprop(sp: SpecProp, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 device: torch.device | str) -> list[torch.Tensor]:
    """Train this rank's stage of ``sp`` on ``batches``, then flush (``SpecPropRunner``).
    Returns the head's losses per step (other ranks: empty)."""
    runner = SpecPropRunner(sp, device)
    losses = runner.train(batches)
    runner.flush()
    return losses


def run_gpipe(stage: nn.Module,
              optimizer: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer],
              batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str,
              micro_batches: int, *, head: bool) -> list[torch.Tensor]:
    """Train this rank's ``stage`` (the head, ``head(h, y) -> mean loss``, on the last rank)
    with its ``optimizer``(s), GPipe-style synchronous micro-batches: each batch is split into
    ``micro_batches`` along dimension 0, forwarded through all stages, backpropagated, and
    every stage steps once per batch with the summed gradient. Returns the head's batch
    losses."""
    if micro_batches < 1:
        raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
    rank, world = _rank("run_gpipe")
    if head != (rank == world - 1):
        raise ValueError(f"head=True exactly on the last rank ({world - 1}); rank {rank} got "
                         f"head={head}")
    device = torch.device(device)
    chan = Channel(device)
    params = [p for p in stage.parameters() if p.requires_grad]
    optimizers = _as_list(optimizer)
    losses: list[torch.Tensor] = []
    for x, y in batches:
        xs, ys = x.to(device).chunk(micro_batches), y.to(device).chunk(micro_batches)
        grads: list[torch.Tensor | None] = [None] * len(params)
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        parts: list[torch.Tensor] = []
        below: list[torch.Tensor] = []  # the head's input gradients, sent after all forwards
        for xm, ym in zip(xs, ys, strict=True):
            h_in = xm if rank == 0 else chan.recv(rank - 1).requires_grad_()
            if head:
                loss = stage(h_in, ym) * (len(ym) / len(y))
                parts.append(loss.detach())
                below.append(_backward(loss, None, params, grads, h_in))
            else:
                h = stage(h_in)
                chan.send(h, rank + 1)
                kept.append((h_in, h))
        for h_in, h in kept:
            below.append(_backward(h, chan.recv(rank + 1), params, grads, h_in, rank > 0))
        for g in below:
            if g is not None:
                chan.send(g, rank - 1)
        _apply(params, grads, optimizers)
        if head:
            losses.append(torch.stack(parts).sum())
    chan.close()
    return losses


def _backward(out: torch.Tensor, grad: torch.Tensor | None, params: list[torch.Tensor],
              acc: list[torch.Tensor | None], h_in: torch.Tensor,
              input_grad: bool = True) -> torch.Tensor | None:
    """Backpropagate one micro-batch: add its parameter gradients to ``acc``; return the
    gradient of its input (None with ``input_grad=False``)."""
    wrt = params + ([h_in] if input_grad else [])
    out_grads = torch.autograd.grad(out, wrt, grad, allow_unused=True)
    for i, g in enumerate(out_grads[:len(params)]):
        if g is not None:
            acc[i] = g if acc[i] is None else acc[i] + g
    return out_grads[-1] if input_grad else None


@torch.no_grad()
def pipeline_loss(stage: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  device: torch.device | str, *, head: bool) -> float | None:
    """Evaluate the pipelined model: the mean of the head's losses over ``batches`` on the
    head rank (``head=True``); the other ranks forward their stage and return None."""
    rank, _ = _rank("pipeline_loss")
    device = torch.device(device)
    chan = Channel(device)
    losses = []
    for x, y in batches:
        h_in = x.to(device) if rank == 0 else chan.recv(rank - 1)
        if head:
            losses.append(stage(h_in, y.to(device)))
        else:
            chan.send(stage(h_in), rank + 1)
    chan.close()
    return float(torch.stack(losses).mean()) if head else None
