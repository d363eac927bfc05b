"""BK-Core: Green's functions of tridiagonal Hamiltonians (causal and full) and structured
operators (Toeplitz, semiseparable). See docs/BK.md."""

from resnetbk.bk.green import causal_green, resolvent_diag
from resnetbk.bk.green_table import GreenTable
from resnetbk.bk.semiseparable import semiseparable_matvec, semiseparable_to_dense
from resnetbk.bk.toeplitz import (
    ToeplitzCGResult,
    ToeplitzConvergenceError,
    block_toeplitz_matvec,
    causal_conv,
    solve_toeplitz,
    solve_toeplitz_cg,
    toeplitz_matvec,
    toeplitz_to_dense,
)

__all__ = [
    "GreenTable",
    "ToeplitzCGResult",
    "ToeplitzConvergenceError",
    "block_toeplitz_matvec",
    "causal_conv",
    "causal_green",
    "resolvent_diag",
    "semiseparable_matvec",
    "semiseparable_to_dense",
    "solve_toeplitz",
    "solve_toeplitz_cg",
    "toeplitz_matvec",
    "toeplitz_to_dense",
]
