"""resnetbk: hyperbolic-geometry-native deep learning.

Exact Poincaré-ball and Lorentz-hyperboloid geometry (`resnetbk.geometry`), hyperbolic layers
(`resnetbk.nn`) and Riemannian optimizers (`resnetbk.optim`).
"""

from resnetbk.debug import debug_checks, debug_enabled

__version__ = "0.1.0"
__all__ = ["__version__", "debug_checks", "debug_enabled"]
