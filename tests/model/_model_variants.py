"""Micro configurations of every model variant, shared by the model tests."""

from __future__ import annotations

import dataclasses

import torch

from resnetbk.model import ByteLM, ModelConfig, build_model

P = 4
MICRO = ModelConfig(patch_size=P, byte_dim=8, d_global=32, n_global_layers=2, d_local=16,
                    n_local_layers=1, n_heads=2, ff_mult=2, conv_modes=2, d_model=32, n_layers=2)
VARIANTS = {
    "lorentz-bk": MICRO,
    "euclidean-bk": dataclasses.replace(MICRO, geometry="euclidean"),
    "lorentz-attention": dataclasses.replace(MICRO, mixer="attention"),
    "euclidean-attention": dataclasses.replace(MICRO, geometry="euclidean", mixer="attention"),
    "transformer": dataclasses.replace(MICRO, arch="transformer"),
}


def make(name: str, dtype: torch.dtype = torch.float64, **changes: object) -> ByteLM:
    """The micro model ``name`` (initialised from torch's global RNG) in ``dtype``."""
    return build_model(dataclasses.replace(VARIANTS[name], **changes)).to(dtype)


def random_bytes(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=gen)
