"""Optical Poincaré core: a differentiable simulator of polarisation optics computing on H^3.

``mueller``: Stokes vectors and Mueller matrices of the elements (Goldstein convention).
``lorentz``: Mueller <-> Lorentz (L = M / det(M)^(1/4)), Stokes <-> Lorentz/Klein/Poincaré points.
``program``: optical programs and ``compile_lorentz`` (Lorentz transform -> 6 waveplates and one
partial polariser). ``hardware``: encoder (the exp map), polarimeter readout with noise, and
Monte-Carlo hardware instances. ``layers``: OpticalLorentzLinear (a bank of H^3 optical units)
and hybridize; ``nonlinear``: EIT, saturable-absorber and SBS activations per beam-splitter
channel; ``evaluate``: the issue-7 evaluation. The names most code needs are re-exported
here; see docs/OPTICS.md.
"""

from resnetbk.optics import evaluate, hardware, layers, lorentz, mueller, nonlinear, program
from resnetbk.optics.hardware import HardwareInstance, HardwareModel, encode
from resnetbk.optics.layers import OpticalLorentzLinear, hybridize
from resnetbk.optics.lorentz import (
    lorentz_to_mueller,
    mueller_to_lorentz,
    random_lorentz,
    stokes_to_lorentz,
)
from resnetbk.optics.program import Element, OpticalProgram, compile_lorentz

__all__ = [
    "Element",
    "HardwareInstance",
    "HardwareModel",
    "OpticalLorentzLinear",
    "OpticalProgram",
    "compile_lorentz",
    "encode",
    "evaluate",
    "hardware",
    "hybridize",
    "layers",
    "lorentz",
    "lorentz_to_mueller",
    "mueller",
    "mueller_to_lorentz",
    "nonlinear",
    "program",
    "random_lorentz",
    "stokes_to_lorentz",
]
