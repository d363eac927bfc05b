"""Logarithmic number system: sign + fixed-point log2 codes and their arithmetic.

``codec`` defines the format (layout, range, zero, saturation) and encode/decode; ``arith``
the operations on codes: exact multiply, divide and integer power, log-scaling square root
and real power, and add/subtract through the Gaussian logarithms (docs/LNS.md).
"""

from resnetbk.lns.arith import add, div, mul, pow, sqrt, sub
from resnetbk.lns.codec import LNSFormat, decode, encode

__all__ = ["LNSFormat", "add", "decode", "div", "encode", "mul", "pow", "sqrt", "sub"]
