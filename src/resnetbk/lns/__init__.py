"""Logarithmic number system: sign + fixed-point log2 codes and their arithmetic.

``codec`` defines the format (layout, range, zero, saturation) and encode/decode; ``arith``
the operations on codes: exact multiply, divide and integer power, log-scaling square root
and real power, and add/subtract through the Gaussian logarithms, rounded once in float64
(``backend="exact"``) or by one Triton kernel on CUDA codes of at most 16 bits
(``"triton"``: sb table + db cotransformation; ``"texture"``: the sb table in a CUDA texture;
``"mufu"``: ex2/lg2 approximations; ``resnetbk.kernels.lns_add``), at most one code off the
exact result (docs/LNS.md).
"""

from resnetbk.lns.arith import add, div, mul, pow, sqrt, sub
from resnetbk.lns.codec import LNSFormat, decode, encode

__all__ = ["LNSFormat", "add", "decode", "div", "encode", "mul", "pow", "sqrt", "sub"]
