"""GPU benchmark of 2:4 semi-structured sparsity: sparse vs dense GEMMs, SparseLorentzLinear.

Part 1, GEMMs (float16 and bfloat16). For tokens M, in K, out N, a weight W (N, K) pruned 2:4
by magnitude along K (``nn.sparse.mask_2_4``) and activations x (M, K), each variant computes
the product with the same masked W:

* ``dense``: ``F.linear(x, W)``, cuBLAS y = x W^T (M, N);
* ``dense_wxt``: ``torch.mm(W, xt)`` with xt = x^T contiguous (K, M): y^T = W x^T (N, M), the
  orientation torch's sparse kernels compute natively (the sparse matrix is their first
  operand: there is no x @ S kernel, ``F.linear(x, S)`` runs as (S x^T)^T);
* ``<backend>``: ``F.linear(x, S)`` with S = ``SparseSemiStructuredTensor<backend>.from_dense(W)``
  (what ``to_sparse_semi_structured`` returns; ``_FORCE_CUTLASS`` picks between the two there),
  backend = cusparselt / cutlass;
* ``<backend>_wxt``: ``torch.mm(S, xt)``, the native orientation without torch's transposes;
* ``cusparselt_search_wxt``: ``torch._cslt_sparse_mm`` with the algorithm id found by
  ``torch._cslt_sparse_mm_search`` for this shape (cuSPARSELt's own tuning).

Reported per variant: median ms (``common.time_ms``), effective TFLOP/s (2 M K N dense-equivalent
flops per call), ``speedup`` over the dense variant of the same orientation, bytes moved (x, the
weight as stored -- compressed values and metadata for the sparse ones, measured from the
tensors -- and y), ``pct_copy_bw`` (bytes/s over the measured copy bandwidth: the ceiling that
matters for the tall-skinny inference shapes) and ``pct_dense_peak`` (TFLOP/s over the best dense
TFLOP/s of the run in that dtype: 2:4 is "2x theoretical", i.e. up to 200%), and the largest
relative difference from the dense product (sanity). A failing variant is recorded with its error.

Part 2, the layer (``nn.SparseLorentzLinear`` after ``compress(backend)``) vs the dense fused
``nn.LorentzLinear`` forward, no autograd, for the same masked weights: ms, speedup, the plain
``F.linear`` GEMM of the same shape for scale (``x_gemm``), which path ran, and the largest
difference from the dense fused output relative to its largest coordinate. At 16-128 rows the
layer forwards may be host-bound (Python dispatch of torch's sparse tensor subclass, the Triton
launch): compare their time with the GEMM rows of part 1 before blaming the kernels.

``summary`` lists, per dtype, the shapes where a sparse variant beat dense (speedup > 1).
Expected wall time on an H200: about 1-2 minutes (the 16384^3 GEMMs and the CUTLASS
compression of 16384 x 16384 weights dominate).

Usage: ``python bench/sparse_gpu.py`` (CUDA; writes bench/results/sparse_gpu_<gpu>.json),
``--quick`` for a small smoke run without JSON.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import copy_bandwidth, time_ms, write_results
from linear_gpu import hyperboloid_points

from resnetbk.nn import LorentzLinear
from resnetbk.nn.sparse import SparseLorentzLinear, mask_2_4

DTYPES = (torch.float16, torch.bfloat16)
BACKENDS = ("cusparselt", "cutlass")
GEMM_SHAPES = [  # (tokens M, in K, out N)
    (4096, 4096, 4096), (4096, 4096, 8192), (8192, 4096, 8192), (8192, 8192, 8192),
    (16384, 4096, 16384), (16384, 16384, 16384),
    (16, 4096, 16384), (128, 4096, 16384), (1024, 4096, 16384),
]
LAYER_SHAPES = [(8192, 4096, 4096), (8192, 4096, 16384), (16, 4096, 16384), (128, 4096, 16384)]
QUICK_GEMM = [(1024, 1024, 1024), (16, 1024, 4096)]
QUICK_LAYER = [(1024, 1024, 1024)]


def sparse_class(backend: str) -> type:
    return {"cusparselt": torch.sparse.SparseSemiStructuredTensorCUSPARSELT,
            "cutlass": torch.sparse.SparseSemiStructuredTensorCUTLASS}[backend]


def stored_bytes(s: torch.Tensor) -> int:
    """Bytes of a semi-structured tensor as the kernel reads it (values and metadata)."""
    return sum(t.numel() * t.element_size() for t in (s.packed, s.meta) if t is not None)


def reps_for(flops: float) -> dict:
    if flops > 2e12:
        return {"reps": 5, "group": 2}
    return {"reps": 10, "group": 5} if flops > 2e11 else {"reps": 20, "group": 10}


def timed(row: dict, key: str, fn: Callable[[], torch.Tensor], flops: float, nbytes: int,
          copy_bw: float, reference: torch.Tensor | None) -> None:
    """Time fn into row[key] (errors recorded, not raised); ``reference``: the dense product in
    fn's orientation, for the sanity difference."""
    try:
        out = fn()
        ms = time_ms(fn, **reps_for(flops))
    except Exception as exc:  # a failing variant is reported, not fatal
        row[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        return
    entry = {"ms": ms, "TFLOPs": flops / (ms * 1e-3) / 1e12, "bytes": nbytes,
             "pct_copy_bw": 100 * nbytes / (ms * 1e-3) / copy_bw}
    if reference is not None:
        entry["max_rel_diff"] = ((out.float() - reference.float()).abs().max()
                                 / reference.float().abs().max()).item()
    row[key] = entry


def gemm_case(m: int, k: int, n: int, dtype: torch.dtype, copy_bw: float) -> dict:
    e = torch.finfo(dtype).bits // 8
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    xt = x.t().contiguous()
    w = torch.randn(n, k, device="cuda", dtype=dtype)
    w = w * mask_2_4(w)
    flops = 2.0 * m * k * n
    act_bytes = e * (m * k + m * n)
    row: dict = {"M": m, "K": k, "N": n, "dtype": str(dtype).removeprefix("torch.")}
    reference = F.linear(x, w)
    timed(row, "dense", lambda: F.linear(x, w), flops, act_bytes + e * n * k, copy_bw, None)
    timed(row, "dense_wxt", lambda: torch.mm(w, xt), flops, act_bytes + e * n * k, copy_bw, None)
    for backend in BACKENDS:
        try:
            s = sparse_class(backend).from_dense(w)
        except Exception as exc:
            row[backend] = {"error": f"compress: {type(exc).__name__}: {exc}"[:300]}
            continue
        row[f"{backend}_class"] = type(s).__name__
        nbytes = act_bytes + stored_bytes(s)
        timed(row, backend, lambda s=s: F.linear(x, s), flops, nbytes, copy_bw, reference)
        timed(row, f"{backend}_wxt", lambda s=s: torch.mm(s, xt), flops, nbytes, copy_bw,
              reference.t())
        if backend == "cusparselt":
            try:
                alg = torch._cslt_sparse_mm_search(s.packed, xt)
            except Exception as exc:
                row["cusparselt_search_wxt"] = {"error": f"search: {exc}"[:300]}
            else:
                row["cusparselt_alg_id"] = alg
                timed(row, "cusparselt_search_wxt",
                      lambda s=s, alg=alg: torch._cslt_sparse_mm(s.packed, xt, alg_id=alg),
                      flops, nbytes, copy_bw, reference.t())
        del s
    for key, val in list(row.items()):
        if isinstance(val, dict) and "ms" in val:
            base = row["dense_wxt" if key.endswith("_wxt") else "dense"]
            if "ms" in base:
                val["speedup"] = base["ms"] / val["ms"]
    return row


def layer_case(rows: int, d_in: int, d_out: int, dtype: torch.dtype) -> dict:
    x = hyperboloid_points(rows, d_in).to(dtype)
    dense = LorentzLinear(d_in, d_out).to("cuda", dtype)
    with torch.no_grad():
        dense.bias.normal_()
    sparse = {b: SparseLorentzLinear.from_dense(dense).compress(b) for b in BACKENDS}
    with torch.no_grad():  # the dense layer with the same (masked) weight
        dense.weight.copy_(sparse[BACKENDS[0]].weight)
    w = dense.weight.detach()
    flops = 2.0 * rows * (d_in + 1) * d_out
    row: dict = {"rows": rows, "d_in": d_in, "d_out": d_out,
                 "dtype": str(dtype).removeprefix("torch."), "flops": flops}
    with torch.no_grad():
        reference = dense(x)
        for key, fn in (("gemm", lambda: F.linear(x, w)), ("dense_fused", lambda: dense(x))):
            row[key] = {"ms": time_ms(fn, **reps_for(flops))}
        for backend, layer in sparse.items():
            reason = layer.fallback_reason(x)
            try:
                out = layer(x)
                ms = time_ms(lambda layer=layer: layer(x), **reps_for(flops))
            except Exception as exc:  # reported, not fatal
                row[backend] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            diff = (out.float() - reference.float()).abs().max() / reference.float().abs().max()
            path = reason or f"semi-structured ({layer.compressed_backend})"
            row[backend] = {"ms": ms, "path": path, "max_rel_diff": diff.item()}
    for key, val in row.items():
        if isinstance(val, dict) and "ms" in val:
            val["TFLOPs"] = flops / (val["ms"] * 1e-3) / 1e12
            val["x_gemm"] = val["ms"] / row["gemm"]["ms"]
            if key != "gemm":
                val["speedup"] = row["dense_fused"]["ms"] / val["ms"]
    return row


def summarize(gemms: list[dict], layers: list[dict]) -> dict:
    """Per dtype: the best dense TFLOP/s, pct_dense_peak per variant, and where sparse won."""
    summary: dict = {}
    for dtype in {r["dtype"] for r in gemms}:
        rows = [r for r in gemms if r["dtype"] == dtype]
        peak = max((v["TFLOPs"] for r in rows for k, v in r.items()
                    if k.startswith("dense") and isinstance(v, dict) and "TFLOPs" in v),
                   default=float("nan"))
        wins = []
        for r in rows:
            for key, val in r.items():
                if isinstance(val, dict) and "TFLOPs" in val:
                    val["pct_dense_peak"] = 100 * val["TFLOPs"] / peak
                    if not key.startswith("dense") and val.get("speedup", 0) > 1:
                        wins.append(f"{r['M']}x{r['K']}x{r['N']} {key} {val['speedup']:.2f}x")
        layer_wins = [f"{r['rows']}x{r['d_in']}x{r['d_out']} {b} {r[b]['speedup']:.2f}x"
                      for r in layers if r["dtype"] == dtype for b in BACKENDS
                      if r[b].get("speedup", 0) > 1]
        summary[dtype] = {"dense_peak_TFLOPs": peak, "gemm_wins": wins, "layer_wins": layer_wins}
    return summary


def fmt(val: dict | None) -> str:
    if not isinstance(val, dict):
        return f"{'-':>24}"
    if "ms" not in val:
        return f"{'error':>24}"
    return f"{val['ms']:>9.3f}{val.get('TFLOPs', 0):>8.0f}{val.get('speedup', 1):>7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, no JSON")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("sparse_gpu.py needs a CUDA device")
    warnings.filterwarnings("ignore", message="The PyTorch API of SparseSemiStructuredTensor")
    copy_bw = copy_bandwidth()
    gemm_shapes, layer_shapes = (QUICK_GEMM, QUICK_LAYER) if args.quick else (GEMM_SHAPES,
                                                                              LAYER_SHAPES)
    print(f"{torch.cuda.get_device_name()}, copy {copy_bw / 1e9:.0f} GB/s, cuSPARSELt "
          f"{torch.backends.cusparselt.version()}")
    gemms, layers = [], []
    keys = ("dense", "cusparselt", "cutlass", "dense_wxt", "cusparselt_wxt", "cutlass_wxt",
            "cusparselt_search_wxt")
    print(f"{'M x K x N':<20}{'dtype':<10}" + "".join(f"{k[:22]:>24}" for k in keys)
          + "   (ms, TFLOP/s, speedup)")
    for dtype in DTYPES:
        for m, k, n in gemm_shapes:
            row = gemm_case(m, k, n, dtype, copy_bw)
            gemms.append(row)
            print(f"{f'{m}x{k}x{n}':<20}{row['dtype']:<10}"
                  + "".join(fmt(row.get(key)) for key in keys))
            torch.cuda.empty_cache()
    print(f"\n{'layer rows x in x out':<24}{'dtype':<10}{'gemm':>24}{'dense_fused':>24}"
          f"{'cusparselt':>24}{'cutlass':>24}")
    for dtype in DTYPES:
        for shape in layer_shapes:
            row = layer_case(*shape, dtype)
            layers.append(row)
            print(f"{'x'.join(map(str, shape)):<24}{row['dtype']:<10}"
                  + "".join(fmt(row.get(k)) for k in ("gemm", "dense_fused", *BACKENDS)))
            for b in BACKENDS:
                if "path" in row[b]:
                    print(f"    {b}: {row[b]['path']}, max rel diff {row[b]['max_rel_diff']:.2g}")
    summary = summarize(gemms, layers)
    for dtype, s in summary.items():
        print(f"{dtype}: dense peak {s['dense_peak_TFLOPs']:.0f} TFLOP/s; sparse wins: "
              f"{s['gemm_wins'] or 'none'}; layer wins: {s['layer_wins'] or 'none'}")
    if not args.quick:
        payload = {"copy_bandwidth_GBs": copy_bw / 1e9,
                   "cusparselt_version": torch.backends.cusparselt.version(),
                   "force_cutlass_flag": hasattr(torch.sparse.SparseSemiStructuredTensor,
                                                 "_FORCE_CUTLASS"),
                   "gemm": gemms, "layer": layers, "summary": summary}
        print(f"wrote {write_results('sparse_gpu', payload)}")


if __name__ == "__main__":
    main()
