"""Conditioning embeddings shared by denoising nets: timesteps (sinusoidal) and class labels.

The sinusoidal embedding is the Transformer's positional encoding (Vaswani et al. 2017,
section 3.5) applied to a diffusion timestep, as in DDPM (Ho et al. 2020, appendix B).
Timesteps may be fractional (samplers that evaluate between table entries).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of (possibly fractional) timesteps: t (B,) -> (B, dim).

    Frequencies run geometrically from 1 to 1/max_period; the first half of the features
    are cosines, the second half sines (an odd `dim` gets a trailing zero column).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([angles.cos(), angles.sin()], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class TimeEmbedding(nn.Module):
    """t (B,) -> (B, dim): sinusoidal features of width `base` through a two-layer SiLU MLP."""

    def __init__(self, dim: int, base: int | None = None):
        super().__init__()
        self.base = base or dim
        self.mlp = nn.Sequential(nn.Linear(self.base, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.base))


class ClassEmbedding(nn.Module):
    """Class labels y (B,) -> (B, dim), with one extra learned row for "no label".

    The extra row has index `num_classes` (`self.null`); classifier-free guidance
    (Ho & Salimans 2022) trains it by replacing dropped labels with it and evaluates the
    unconditional model by passing it.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.null = num_classes
        self.embed = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: Tensor) -> Tensor:  # (B,) int64 in 0..num_classes -> (B, dim)
        return self.embed(y)
