"""SpecProp with one stage per process (``specprop_dist``) against the single-process wrapper
for a fixed seed, and the GPipe-style baseline against plain backprop: gloo on CPU processes,
NCCL on two GPUs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from resnetbk.train.specprop import LossHead, SpecProp, SpecPropConfig, split_sequential
from resnetbk.train.specprop_dist import Channel, run_gpipe, run_specprop

WIDTH, CLASSES, BATCH, STEPS = 6, 3, 9, 7
CASES = {
    "correction": SpecPropConfig(delay=1, uncertainty=True, gate_on=0.3, gate_off=0.1,
                                 dgm_hidden=4, dgm_lr=0.05),
    "dni": SpecPropConfig(target="bootstrap", correction="noise", delay=2,
                          context_dim=CLASSES),
    "locked": SpecPropConfig(delay=0),
}


def _momentum(module: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)


def _model(n_body: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(5, WIDTH), nn.Tanh()]
    for _ in range(n_body - 1):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(WIDTH, CLASSES)).double()


def _stages(seq: nn.Sequential) -> list[nn.Sequential]:
    return split_sequential(seq, list(range(2, len(seq), 2)))


def _wrapper(stages: list[nn.Sequential], cfg: SpecPropConfig) -> SpecProp:
    *body, head = stages
    context = (lambda y: F.one_hot(y, CLASSES).double()) if cfg.context_dim else None
    return SpecProp(body, LossHead(head, F.cross_entropy), [WIDTH] * len(body), _momentum, cfg,
                    context_fn=context)


def _data(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed + 1)
    return [(torch.randn(BATCH, 5, generator=g, dtype=torch.float64),
             torch.randint(0, CLASSES, (BATCH,), generator=g)) for _ in range(STEPS)]


def _log_messages(log: list[tuple[int, str]]) -> None:
    """Record this process's point-to-point operations as (peer, kind): "S" send, "R"
    receive, "G" + the sorted kinds of a batched group."""

    def isend(self: Channel, x: torch.Tensor, dst: int, _orig=Channel._isend) -> None:
        log.append((dst, "S"))
        _orig(self, x, dst)

    def recv(self: Channel, x: torch.Tensor, src: int, _orig=Channel._recv) -> None:
        log.append((src, "R"))
        _orig(self, x, src)

    def swap(self: Channel, send: tuple | None, recv: tuple | None,
             _orig=Channel.swap) -> None:
        ops = [(send[1], "S")] if send else []
        ops += [(recv[1], "R")] if recv else []
        if len({peer for peer, _ in ops}) == 1:
            log.append((ops[0][0], "G" + "".join(sorted(k for _, k in ops))))
        _orig(self, send, recv)

    Channel._isend, Channel._recv, Channel.swap = isend, recv, swap


def _in_step(logs: list[list[tuple[int, str]]]) -> None:
    """NCCL matches the point-to-point operations between two ranks in the order they are
    posted, and blocks a send on the GPU until its receive is posted: for every pair, the two
    sides must post dual operations (S-R, R-S, a group with both) in the same order."""
    dual = {"S": "R", "R": "S", "GS": "GR", "GR": "GS", "GRS": "GRS"}
    for a in range(len(logs)):
        for b in range(a + 1, len(logs)):
            seq_a = [k for peer, k in logs[a] if peer == b]
            seq_b = [k for peer, k in logs[b] if peer == a]
            assert [dual[k] for k in seq_a] == seq_b, (a, b, seq_a, seq_b)


def _worker(rank: int, world: int, port: int, backend: str, seed: int, out: str) -> None:
    """One process: every case with this rank's stage; its parameters and the head's losses
    go to ``out/<rank>.pt``, with the log of its messages."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=world)
    log: list[tuple[int, str]] = []
    _log_messages(log)
    device = torch.device(f"cuda:{rank}" if backend == "nccl" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    result = {}
    try:
        for name, cfg in CASES.items():
            stages = _stages(_model(world - 1, seed))
            stages[rank].to(device)  # only this rank's stage, before the wrapper is built
            sp = _wrapper(stages, cfg)
            losses = run_specprop(sp, _data(seed), device)
            result[name] = ([p.detach().cpu() for p in stages[rank].parameters()],
                            [float(v) for v in losses])
        stage = _stages(_model(world - 1, seed))[rank].to(device)
        head = rank == world - 1
        module = LossHead(stage, F.cross_entropy) if head else stage
        losses = run_gpipe(module, _momentum(stage), _data(seed), device, micro_batches=3,
                           head=head)
        result["gpipe"] = ([p.detach().cpu() for p in stage.parameters()],
                           [float(v) for v in losses])
    finally:
        dist.destroy_process_group()
    result["log"] = log
    torch.save(result, Path(out) / f"{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_against_single_process(world: int, backend: str, seed: int, tmp_path: Path,
                                  tol: float) -> None:
    mp.spawn(_worker, args=(world, _free_port(), backend, seed, str(tmp_path)), nprocs=world)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(world)]
    _in_step([r["log"] for r in ranks])
    for name, cfg in CASES.items():
        stages = _stages(_model(world - 1, seed))
        sp = _wrapper(stages, cfg)
        losses = [float(sp.step(x, y)) for x, y in _data(seed)]
        sp.flush()
        assert ranks[-1][name][1] == pytest.approx(losses, rel=tol, abs=tol), name
        for r, stage in enumerate(stages):
            for got, want in zip(ranks[r][name][0], stage.parameters(), strict=True):
                torch.testing.assert_close(got, want.detach(), rtol=tol, atol=tol)
    # GPipe: summed micro-batch gradients = the full-batch gradient of plain backprop.
    seq = _model(world - 1, seed)
    opt = _momentum(seq)
    losses = []
    for x, y in _data(seed):
        loss = F.cross_entropy(seq(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert ranks[-1]["gpipe"][1] == pytest.approx(losses, rel=1e-12, abs=1e-12)
    for r, stage in enumerate(_stages(seq)):
        for got, want in zip(ranks[r]["gpipe"][0], stage.parameters(), strict=True):
            torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("world", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_gloo_processes_match_the_single_process_wrapper(gen: torch.Generator, tmp_path: Path,
                                                          world: int) -> None:
    """CPU processes (gloo) run the same schedule as ``SpecProp.step``: the same bytes travel
    and the same operations run per stage, so the results are bit-identical (world size 3
    adds a middle stage that relays gradients). Every pair of ranks posts its messages in
    step, as NCCL needs."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    _check_against_single_process(world, "gloo", seed, tmp_path, tol=0.0)


@pytest.mark.gpu
def test_nccl_on_two_gpus_matches_the_single_process_wrapper(gen: torch.Generator,
                                                              tmp_path: Path) -> None:
    if torch.cuda.device_count() < 2 or not dist.is_nccl_available():
        pytest.skip("needs 2 CUDA devices and NCCL")
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    _check_against_single_process(2, "nccl", seed, tmp_path, tol=1e-10)


def test_needs_a_process_group(gen: torch.Generator) -> None:
    stages = _stages(_model(1, 0))
    sp = _wrapper(stages, SpecPropConfig())
    with pytest.raises(ValueError, match="process group"):
        run_specprop(sp, _data(0), "cpu")
    with pytest.raises(ValueError, match="micro_batches"):
        run_gpipe(stages[0], _momentum(stages[0]), _data(0), "cpu", micro_batches=0,
                  head=False)
    with pytest.raises(ValueError, match="dimensions"):
        Channel(torch.device("cpu")).send(torch.zeros([1] * 9), 0)


@pytest.mark.slow
def test_gpu_bench_logic_on_cpu(tmp_path: Path) -> None:
    """bench/specprop_gpu.py --smoke: both modes end to end on the CPU (the two-GPU mode as
    two gloo processes under torchrun) on a small corpus, results in one JSON."""
    root = Path(__file__).resolve().parents[2]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.py").write_text("def f(x):\n    return x + 1\n" * 2000)
    out = tmp_path / "result.json"
    common = ["--smoke", "--budget", "1", "--data", str(corpus), "--out", str(out)]
    env = {**os.environ, "RESNETBK_CACHE": str(tmp_path / "cache")}
    bench = str(root / "bench" / "specprop_gpu.py")
    subprocess.run([sys.executable, bench, *common], check=True, env=env, timeout=300)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    subprocess.run([torchrun, "--nproc-per-node", "2", bench, "--two-gpu", *common],
                   check=True, env=env, timeout=300)
    report = json.loads(out.read_text())
    assert set(report["single_gpu"]) >= {"backprop", "specprop"}
    assert report["single_gpu"]["specprop"]["steps"] > 0
    two = report["two_gpu"]
    assert two["specprop"]["final_val_loss"] > 0 and two["gpipe"]["final_val_loss"] > 0
    assert min(two["specprop"]["final_val_loss"], two["gpipe"]["final_val_loss"]) <= \
        two["target_val_loss"]
