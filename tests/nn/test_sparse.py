"""SparseLorentzLinear: the 2:4 mask, equality with the dense masked layer, a fixed mask under
fine-tuning, the semi-structured path (GPU) and its fallback, prune-then-fine-tune on digits."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import warnings
from collections import namedtuple
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnetbk.geometry import lorentz
from resnetbk.nn import LorentzLinear
from resnetbk.nn import sparse as sparse_mod
from resnetbk.nn.sparse import SparseFallbackWarning, SparseLorentzLinear, mask_2_4, prune_2_4
from resnetbk.optim import RiemannianAdam, RiemannianSGD

F64 = torch.float64
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def rand_c(gen: torch.Generator) -> float:
    return float(torch.empty((), dtype=F64).uniform_(0.3, 3.0, generator=gen))


def points(n: int, d: int, c: float, gen: torch.Generator, dtype: torch.dtype = F64,
           radius: float = 2.0) -> torch.Tensor:
    """n points of the hyperboloid at geodesic distance up to ``radius`` / sqrt(c) from the
    origin (exp_0 of random tangent vectors), rounded to ``dtype``."""
    u = torch.randn(n, d + 1, dtype=F64, generator=gen)
    u[:, 0] = 0
    scale = torch.rand(n, 1, dtype=F64, generator=gen) * radius / math.sqrt(c)
    u = u / u.norm(dim=-1, keepdim=True) * scale
    return lorentz.project(lorentz.expmap0(u, c=c).to(dtype), c=c)


def lorentz_residual(y: torch.Tensor, c: float) -> float:
    """max |c <y, y>_L + 1| / (1 + c y_0^2): 0 on the hyperboloid."""
    yd = y.double()
    assert torch.isfinite(yd).all() and (yd[..., 0] > 0).all()
    err = (c * (yd[..., 1:].pow(2).sum(-1) - yd[..., 0].pow(2)) + 1).abs()
    return (err / (1 + c * yd[..., 0].pow(2))).max().item()


def reference_mask(w: torch.Tensor) -> torch.Tensor:
    """2:4 magnitude mask by plain Python: per group, the indices of the 2 largest |w|, ties
    to the lower index."""
    mask = torch.zeros(w.shape, dtype=torch.bool)
    for i, row in enumerate(w.double().abs().tolist()):
        for g in range(0, len(row), 4):
            best = sorted(range(4), key=lambda k, g=g, row=row: (-row[g + k], k))[:2]
            for k in best:
                mask[i, g + k] = True
    return mask


def dense_layer(d_in: int, d_out: int, c: float, gen: torch.Generator, **kwargs: object,
                ) -> LorentzLinear:
    """A LorentzLinear with random weights everywhere (time column included) and bias."""
    layer = LorentzLinear(d_in, d_out, c=c, **kwargs)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / math.sqrt(d_in))
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(d_out, generator=gen) * 0.3)
    return layer


def masked_copy(layer: LorentzLinear) -> LorentzLinear:
    """The dense layer with its spatial block masked by ``reference_mask``: the oracle."""
    ref = copy.deepcopy(layer)
    with torch.no_grad():
        ref.weight[:, 1:] *= reference_mask(ref.weight[:, 1:])
    return ref


# ----------------------------------------------------------------------------- the mask
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_mask_keeps_the_two_largest_of_every_group(dtype: torch.dtype,
                                                   gen: torch.Generator) -> None:
    w = torch.randn(9, 32, generator=gen).to(dtype)
    mask = mask_2_4(w)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    groups, kept = w.abs().reshape(9, 8, 4), mask.reshape(9, 8, 4)
    assert (kept.sum(-1) == 2).all(), "not exactly 2 of every 4 kept"
    smallest_kept = torch.where(kept, groups, math.inf).amin(-1)
    largest_dropped = torch.where(kept, -math.inf, groups).amax(-1)
    assert (smallest_kept >= largest_dropped).all()
    assert torch.equal(mask, reference_mask(w))


def test_mask_ties_keep_the_lower_index() -> None:
    w = torch.tensor([[1.0, -1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 2.0, 3.0, -3.0, 2.0]])
    expected = torch.tensor([[1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    assert torch.equal(mask_2_4(w), expected)


def test_mask_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        mask_2_4(torch.ones(3, 6))
    with pytest.raises(ValueError, match="floating matrix"):
        mask_2_4(torch.ones(8))
    with pytest.raises(ValueError, match="floating matrix"):
        mask_2_4(torch.ones(2, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="non-finite"):
        mask_2_4(torch.tensor([[1.0, math.nan, 0.0, 2.0]]))


# ----------------------------------------------------------------------------- construction
@pytest.mark.parametrize("learnable_c", [False, True])
@pytest.mark.parametrize("max_distance", [None, 2.0])
def test_from_dense_prunes_the_spatial_block_only(learnable_c: bool, max_distance: float | None,
                                                  gen: torch.Generator) -> None:
    c = rand_c(gen)
    dense = dense_layer(16, 12, c, gen, learnable_c=learnable_c, max_distance=max_distance)
    before = copy.deepcopy(dense.state_dict())
    layer = SparseLorentzLinear.from_dense(dense)
    w, w_dense = layer.weight.detach(), dense.weight.detach()
    expected = reference_mask(w_dense[:, 1:])
    assert torch.equal(layer.mask, expected)
    assert torch.equal(w[:, 0], w_dense[:, 0]), "the time-input column must stay dense"
    assert torch.equal(w[:, 1:], w_dense[:, 1:] * expected)
    assert torch.equal(layer.parametrizations.weight.original.detach(), w)
    assert torch.equal(layer.bias, dense.bias)
    assert layer.max_distance == max_distance and layer.manifold.learnable == learnable_c
    assert float(layer.manifold.c_detached()) == pytest.approx(c, rel=1e-6)
    for key, value in dense.state_dict().items():
        assert torch.equal(value, before[key]), f"from_dense changed the dense layer's {key}"
    assert "sparsity=2:4" in repr(layer)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("max_distance", [None, 2.0])
def test_output_equals_dense_masked_layer_exactly(dtype: torch.dtype, max_distance: float | None,
                                                  gen: torch.Generator) -> None:
    c = rand_c(gen)
    dense = dense_layer(8, 6, c, gen, max_distance=max_distance).to(dtype)
    layer, ref = SparseLorentzLinear.from_dense(dense), masked_copy(dense)
    x = points(50, 8, c, gen, dtype).reshape(5, 10, 9)
    y = layer(x)
    assert y.dtype == dtype and y.shape == (5, 10, 7)
    assert torch.equal(y, ref(x))
    tol = {torch.float64: 1e-12, torch.float32: 1e-6}.get(dtype, 2e-2)
    assert lorentz_residual(y, c) <= tol


def test_direct_construction_is_pruned(gen: torch.Generator) -> None:
    layer = SparseLorentzLinear(12, 5, c=rand_c(gen))
    assert torch.equal(layer.mask, reference_mask(layer.parametrizations.weight.original[:, 1:]))
    assert (layer.weight[:, 1:][~layer.mask] == 0).all()
    layer.weight = torch.ones(5, 13)  # assignment stores the masked value
    assert torch.equal(layer.parametrizations.weight.original[:, 1:], layer.mask.float())
    old_mask = layer.mask.clone()
    layer.reset_parameters()
    assert torch.equal(layer.mask, reference_mask(layer.weight.detach()[:, 1:]))
    assert not torch.equal(layer.mask, old_mask), "reset_parameters kept the old mask"


def test_bad_shapes_and_arguments(gen: torch.Generator) -> None:
    with pytest.raises(ValueError, match="in_features must be a multiple of 4"):
        SparseLorentzLinear(6, 4)
    with pytest.raises(ValueError, match="in_features must be a multiple of 4"):
        SparseLorentzLinear.from_dense(LorentzLinear(6, 4))
    with pytest.raises(ValueError, match="dense LorentzLinear"):
        SparseLorentzLinear.from_dense(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="dense LorentzLinear"):
        SparseLorentzLinear.from_dense(SparseLorentzLinear(4, 4))
    layer = SparseLorentzLinear(8, 4)
    with pytest.raises(ValueError, match=r"9 entries \(in_features \+ 1"):
        layer(torch.zeros(2, 8))
    with pytest.raises(ValueError, match=r"shape \(4, 9\)"):
        layer.prune_(torch.zeros(4, 8))
    with pytest.raises(ValueError, match="backend must be one of"):
        layer.compress(backend="cublas")


def test_state_dict_and_deepcopy_keep_the_mask(gen: torch.Generator) -> None:
    c = rand_c(gen)
    layer = SparseLorentzLinear.from_dense(dense_layer(8, 4, c, gen))
    x = points(16, 8, c, gen, torch.float32)
    twin = copy.deepcopy(layer)
    assert torch.equal(twin(x), layer(x)) and torch.equal(twin.mask, layer.mask)
    fresh = SparseLorentzLinear(8, 4, c=c)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh.mask, layer.mask) and torch.equal(fresh(x), layer(x))


# ----------------------------------------------------------------------------- training
def test_gradients_reach_kept_weights_only(gen: torch.Generator) -> None:
    c = rand_c(gen)
    layer = SparseLorentzLinear.from_dense(dense_layer(16, 8, c, gen, max_distance=3.0))
    x = points(64, 16, c, gen, torch.float32)
    (layer(x) * torch.randn(64, 9, generator=gen)).sum().backward()
    grad = layer.parametrizations.weight.original.grad
    assert torch.isfinite(grad).all()
    assert (grad[:, 1:][~layer.mask] == 0).all(), "a pruned weight got a gradient"
    assert (grad[:, 1:][layer.mask] != 0).all(), "a kept weight got no gradient"
    assert (grad[:, 0] != 0).all(), "the time-input column got no gradient"
    assert (layer.bias.grad != 0).any()


def test_gradcheck(gen: torch.Generator) -> None:
    c = rand_c(gen)
    layer = SparseLorentzLinear.from_dense(dense_layer(4, 3, c, gen, max_distance=2.0)).double()
    x = points(5, 4, c, gen)[1:].requires_grad_()
    original = layer.parametrizations.weight.original.detach().clone().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()

    def f(inp: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        params = {"parametrizations.weight.original": w, "bias": b}
        return torch.func.functional_call(layer, params, (inp,))

    assert torch.autograd.gradcheck(f, (x, original, bias))


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
    "rsgd": lambda p: RiemannianSGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    "radam": lambda p: RiemannianAdam(p, lr=0.05, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_pruned_weights_stay_zero_under_fine_tuning(name: str, gen: torch.Generator) -> None:
    c = rand_c(gen)
    layer = SparseLorentzLinear.from_dense(dense_layer(8, 8, c, gen))
    mask = layer.mask.clone()
    original = layer.parametrizations.weight.original
    start = original.detach().clone()
    opt = OPTIMIZERS[name](layer.parameters())
    x, target = points(32, 8, c, gen, torch.float32), torch.randn(32, 9, generator=gen)
    for _ in range(5):
        opt.zero_grad()
        (layer(x) - target).pow(2).mean().backward()
        opt.step()
    assert torch.equal(layer.mask, mask), "the mask changed"
    assert (original.detach()[:, 1:][~mask] == 0).all(), "a stored pruned weight moved"
    assert (layer.weight.detach()[:, 1:][~mask] == 0).all()
    moved = original.detach()[:, 1:][mask] != start[:, 1:][mask]
    assert moved.all(), "kept weights did not train"


# ----------------------------------------------------------------------------- semi-structured
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def row_errors(y: torch.Tensor, y64: torch.Tensor) -> torch.Tensor:
    """Per row: the largest coordinate error relative to the row's largest coordinate."""
    return (y.double() - y64).abs().amax(-1) / y64.abs().amax(-1)


def far_case(dtype: torch.dtype, max_distance: float | None, gen: torch.Generator,
             d_in: int, d_out: int, rows: int) -> tuple[SparseLorentzLinear, torch.Tensor, float]:
    """A layer with large weights and points from the origin out to the range guard; in
    float16 some W x pass 65504 (which the per-row power-of-two scaling must hold)."""
    c = rand_c(gen)
    dense = dense_layer(d_in, d_out, c, gen, max_distance=max_distance)
    half = dtype == torch.float16
    with torch.no_grad():
        dense.weight.mul_(64.0 if half else 4.0)
    layer = SparseLorentzLinear.from_dense(dense)
    x = points(rows, d_in, c, gen, dtype, radius=10.5 if half else 30.0)
    if half:
        product = x.float() @ layer.weight.detach().float().T
        assert product.abs().max() > 65504, "test setup: W x does not overflow float16"
    return layer, x, c


def assert_like_dense(y_sparse: torch.Tensor, layer: SparseLorentzLinear, x: torch.Tensor,
                      c: float) -> None:
    """Per row, the error of the semi-structured forward against the float64 dense masked
    layer is at most the dense path's own error plus 4 unit roundoffs u of the row's largest
    coordinate: W x is rounded once more (to the input dtype, u relative, where the dense path
    keeps float32), which moves the coordinates and, through the row norm, the time coordinate
    and the scale factor by about u each, and the two outputs round differently (u each)."""
    with torch.no_grad():
        y_dense = copy.deepcopy(layer).decompress()(x)
        y64 = copy.deepcopy(layer).decompress().double()(x.double())
    assert lorentz_residual(y_sparse, c) <= 2e-2
    excess = (row_errors(y_sparse, y64) - row_errors(y_dense, y64)).max().item()
    excess /= UNIT_ROUNDOFF[x.dtype]
    assert excess <= 4, f"row error exceeds the dense path's by {excess:.2f} u"


def test_augmented_operands_reproduce_the_layer_product(gen: torch.Generator) -> None:
    """The sparse GEMM's operands (time column folded in as a (w_0, 0, 0, 0) group, zero
    padding, float16 rows scaled by powers of two) give x W^T and are 2:4 throughout."""
    c = rand_c(gen)
    layer = SparseLorentzLinear.from_dense(dense_layer(12, 5, c, gen)).double()
    w = layer.weight.detach()
    x = points(7, 12, c, gen, radius=8.0)
    weight_op = sparse_mod._augmented_weight(w, 32)
    assert weight_op.shape == (5, 32) and weight_op.is_contiguous()
    assert ((weight_op.reshape(5, 8, 4) != 0).sum(-1) <= 2).all()
    x_op, scale = sparse_mod._augmented_input(x, 32)
    assert scale is None
    torch.testing.assert_close(F.linear(x_op, weight_op), F.linear(x, w), rtol=1e-14, atol=1e-12)
    x16 = x.half()
    x_op, scale = sparse_mod._augmented_input(x16, 32)
    assert scale.dtype == torch.float32 and (torch.frexp(scale)[0] == 0.5).all()
    assert (x_op.abs() <= 1).all()
    # Dividing by a power of two is exact, except for entries it takes below float16's normal
    # range (|x| < 2^-14 of the row's scale): they round to the subnormal grid, an error of at
    # most 2^-25 of the scale, far below the row's product error.
    slack = 2.0**-25 * scale
    assert ((x_op[:, :12].float() * scale - x16[:, 1:].float()).abs() <= slack).all()
    assert ((x_op[:, 12:13].float() * scale - x16[:, :1].float()).abs() <= slack).all()
    normal = x16[:, 1:].float().abs() >= 2.0**-14 * scale
    assert torch.equal((x_op[:, :12].float() * scale)[normal], x16[:, 1:].float()[normal])
    assert (x_op[:, 13:] == 0).all()


def test_compressed_layer_falls_back_on_cpu_with_one_warning(
        gen: torch.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sparse_mod, "_warned", set())
    c = rand_c(gen)
    layer = SparseLorentzLinear.from_dense(dense_layer(8, 4, c, gen))
    x = points(16, 8, c, gen, torch.bfloat16)
    expected = layer(x)
    assert layer.fallback_reason(x) == "compress() was not called"
    assert layer.compress() is layer and "compressed=auto" in repr(layer)
    assert "autograd is on" in layer.fallback_reason(x)
    with torch.no_grad():
        assert "need a CUDA GPU" in layer.fallback_reason(x)
        with pytest.warns(SparseFallbackWarning, match="x is on cpu.*dense masked form"):
            first = layer(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            second = layer(x)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert layer.compressed_backend is None
    assert layer.decompress().fallback_reason(x) == "compress() was not called"


_Granule = namedtuple("_Granule", "sparse_min_rows sparse_min_cols dense_min_rows dense_min_cols")


class _DenseStandIn:
    """Stands in for torch's semi-structured class on CPU: "compresses" to the dense operand."""

    BACKEND = "dense-stand-in"
    _DTYPE_SHAPE_CONSTRAINTS: ClassVar[dict[torch.dtype, _Granule]] = {
        torch.float16: _Granule(16, 16, 8, 8), torch.bfloat16: _Granule(32, 64, 8, 8)}

    @staticmethod
    def from_dense(operand: torch.Tensor) -> torch.Tensor:
        return operand.clone()


@pytest.mark.skipif(not INTERPRETED, reason="runs in the TRITON_INTERPRET=1 subprocess of "
                    "test_semi_structured_path_under_interpreter")
# The interpreter evaluates both sides of every tl.where in numpy (tests/kernels/conftest.py).
@pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("max_distance", [None, 3.0])
def test_semi_structured_path_with_a_dense_stand_in(
        dtype: torch.dtype, max_distance: float | None, gen: torch.Generator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The inference path around the sparse GEMM (operands, float16 row scaling, the fused
    epilogue's launch) on CPU: a dense matrix stands in for the compressed one."""
    monkeypatch.setattr(sparse_mod, "_semi_structured_class", lambda backend: _DenseStandIn)
    layer, x, c = far_case(dtype, max_distance, gen, 64, 32, 65)
    layer.compress()
    with torch.no_grad():
        y = layer._semi_structured_forward(x.reshape(5, 13, 65))
    assert y.shape == (5, 13, 33) and y.dtype == dtype
    assert layer.compressed_backend == "dense-stand-in"
    assert_like_dense(y.reshape(65, 33), layer, x, c)


@pytest.mark.skipif(INTERPRETED or torch.cuda.is_available(),
                    reason="the interpreted run itself, or a GPU (where the real path is tested)")
def test_semi_structured_path_under_interpreter() -> None:
    """Runs the stand-in test in a fresh process with TRITON_INTERPRET=1 (Triton decides
    interpreted vs compiled at import, see tests/kernels/test_interpreted.py)."""
    pytest.importorskip("triton", reason="triton is not installed")
    node = f"{Path(__file__)}::test_semi_structured_path_with_a_dense_stand_in"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "4 passed" in result.stdout, (
        f"interpreted run failed (exit {result.returncode}):\n{result.stdout[-4000:]}\n"
        f"{result.stderr[-2000:]}")


# ----------------------------------------------------------------------------- prune_2_4
def test_prune_2_4_swaps_every_lorentz_linear(gen: torch.Generator) -> None:
    c = rand_c(gen)
    model = nn.Sequential(dense_layer(8, 8, c, gen), nn.Sequential(dense_layer(8, 12, c, gen)),
                          nn.Linear(13, 3))
    x = points(10, 8, c, gen, torch.float32)
    expected = nn.Sequential(masked_copy(model[0]), masked_copy(model[1][0]), model[2])(x)
    assert prune_2_4(model) is model
    assert isinstance(model[0], SparseLorentzLinear)
    assert isinstance(model[1][0], SparseLorentzLinear)
    assert torch.equal(model(x), expected)
    with pytest.raises(ValueError, match="no dense LorentzLinear"):
        prune_2_4(model)
    single = dense_layer(4, 4, c, gen)
    assert isinstance(prune_2_4(single), SparseLorentzLinear)
    mixed = nn.Sequential(LorentzLinear(6, 8), LorentzLinear(8, 4))
    with pytest.raises(ValueError, match=r"layer 0 has in_features=6"):
        prune_2_4(mixed)
    assert type(mixed[1]) is LorentzLinear, "prune_2_4 changed a model it rejected"
    prune_2_4(mixed, select=lambda name, layer: layer.in_features % 4 == 0)
    assert type(mixed[0]) is LorentzLinear and isinstance(mixed[1], SparseLorentzLinear)


def test_prune_then_fine_tune_recovers_accuracy_on_digits() -> None:
    """Dense training, 2:4 pruning of both Lorentz layers, fine-tuning with AdamW and weight
    decay: test accuracy back within 3 points of the dense model (over 60 seeds the worst gap
    seen was 1.5 points; pruning alone costs 3-28 points), masks unchanged."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    features = torch.tensor(digits.data, dtype=torch.float32) / 16
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels))
    train, test = order[:1400], order[1400:]

    class LorentzMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(LorentzLinear(64, 32), LorentzLinear(32, 32))
            self.head = nn.Linear(33, 10)

        def forward(self, f: torch.Tensor) -> torch.Tensor:
            u = torch.cat([torch.zeros_like(f[:, :1]), f / 4], dim=1)
            return self.head(self.body(lorentz.expmap0(u, c=1.0)))

    def fit(model: nn.Module, steps: int, lr: float, weight_decay: float) -> None:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(features[train]), labels[train]).backward()
            opt.step()

    def accuracy(model: nn.Module) -> float:
        with torch.no_grad():
            return (model(features[test]).argmax(1) == labels[test]).float().mean().item()

    model = LorentzMLP()
    fit(model, 150, 1e-2, 0.0)
    dense_accuracy = accuracy(model)
    assert dense_accuracy >= 0.9, f"dense training failed: {dense_accuracy:.3f}"
    model = prune_2_4(model)
    masks = [layer.mask.clone() for layer in model.body]
    fit(model, 100, 5e-3, 1e-2)
    tuned_accuracy = accuracy(model)
    assert tuned_accuracy >= dense_accuracy - 0.03, (
        f"fine-tuned {tuned_accuracy:.3f} vs dense {dense_accuracy:.3f}")
    for layer, mask in zip(model.body, masks, strict=True):
        assert torch.equal(layer.mask, mask)
        assert (layer.parametrizations.weight.original[:, 1:][~mask] == 0).all()


# ----------------------------------------------------------------------------- GPU
def _backend_or_skip(backend: str) -> None:
    if backend == "cusparselt" and not torch.backends.cusparselt.is_available():
        pytest.skip("cuSPARSELt is not available in this torch build")
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 sparse Tensor Cores need sm_80+")
    if backend == "cutlass" and torch.cuda.get_device_capability()[0] != 8:
        pytest.skip("torch's CUTLASS 2:4 kernels run only on sm_8x")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cusparselt", "cutlass"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("max_distance", [None, 3.0])
def test_semi_structured_matches_float64_like_the_dense_path(
        backend: str, dtype: torch.dtype, max_distance: float | None,
        gen: torch.Generator) -> None:
    _backend_or_skip(backend)
    layer, x, c = far_case(dtype, max_distance, gen, 256, 64, 333)
    layer, x = layer.cuda().compress(backend), x.cuda()
    with torch.no_grad():
        assert layer.fallback_reason(x) is None
        y = layer(x)
    assert layer.compressed_backend == backend
    assert_like_dense(y, layer, x, c)


def _compressed_cuda_case(d_in: int, d_out: int, backend: str, gen: torch.Generator,
                          ) -> tuple[SparseLorentzLinear, torch.Tensor]:
    """A compressed layer on the GPU and bfloat16 points for it (fresh fallback warnings)."""
    _backend_or_skip(backend)
    c = rand_c(gen)
    layer = SparseLorentzLinear.from_dense(dense_layer(d_in, d_out, c, gen)).cuda()
    return layer.compress(backend), points(64, d_in, c, gen, torch.bfloat16).cuda()


@pytest.mark.gpu
def test_semi_structured_follows_optimizer_steps(gen: torch.Generator,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sparse_mod, "_warned", set())
    layer, x = _compressed_cuda_case(128, 64, "auto", gen)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.1)
    with torch.no_grad():
        before = layer(x)
    with pytest.warns(SparseFallbackWarning, match="autograd"):
        layer(x.float()).pow(2).sum().backward()
    opt.step()
    with torch.no_grad():
        after = layer(x)
        dense_after = copy.deepcopy(layer).decompress()(x)
    assert not torch.equal(after, before), "the compressed weight was not rebuilt"
    differs = row_errors(after, dense_after.double()).max().item()
    assert differs <= 4 * UNIT_ROUNDOFF[torch.bfloat16], f"stale compressed weight? {differs:.3g}"


@pytest.mark.gpu
def test_semi_structured_shape_fallback_warns(gen: torch.Generator,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sparse_mod, "_warned", set())
    layer, x = _compressed_cuda_case(64, 20, "auto", gen)
    with torch.no_grad(), pytest.warns(SparseFallbackWarning, match="out_features=20"):
        y = layer(x)
    assert torch.equal(y, layer.decompress()(x))


@pytest.mark.gpu
def test_cutlass_off_sm8x_falls_back(gen: torch.Generator,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's CUTLASS 2:4 kernels raise outside sm_8x (an H200 is sm_90): the layer says so
    and runs the dense form instead of crashing."""
    if torch.cuda.get_device_capability()[0] == 8:
        pytest.skip("CUTLASS 2:4 kernels run on this sm_8x GPU")
    monkeypatch.setattr(sparse_mod, "_warned", set())
    layer, x = _compressed_cuda_case(64, 64, "auto", gen)
    layer.compress("cutlass")
    with torch.no_grad(), pytest.warns(SparseFallbackWarning, match="only on sm_8x"):
        y = layer(x)
    assert torch.equal(y, layer.decompress()(x))
