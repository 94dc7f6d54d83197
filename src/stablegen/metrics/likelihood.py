"""Likelihood in bits per dimension on discrete data (the BENCHMARKS.md definition).

Continuous models see uniformly dequantized data (Theis et al. 2016, "A note on the
evaluation of generative models"): integer level l in {0..L-1} becomes (l + u) / L, u ~ U[0,1),
then mapped to [-1, 1]. A density p on [-1, 1]^D gives a lower bound on log P(l):
    log P(l) >= E_u log p(x) + D log(2 / L)
so  bpd = -(log p(x) + D log(2 / L)) / (D ln 2); a model that knows nothing scores log2(L).
Discrete models (PixelCNN, RBM) give log P(l) directly: bpd = -log P / (D ln 2).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..data.digits import LEVELS, to_levels


def dequantize(x: Tensor, generator: torch.Generator | None = None, levels: int = LEVELS) -> Tensor:
    """Uniformly dequantize [-1, 1] images with `levels` grey levels; same shape, in [-1, 1)."""
    lv = to_levels(x).to(x.dtype) if levels == LEVELS else ((x.clamp(-1, 1) + 1) / 2 * (levels - 1)).round()
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (lv + u) / levels * 2 - 1


def bits_per_dim(log_prob: Tensor, dim: int, *, levels: int = LEVELS, continuous: bool = True) -> Tensor:
    """Bits/dim per sample from log-likelihoods (nats), shape (N,) -> (N,).

    continuous=True: `log_prob` is a density on [-1, 1]^dim over dequantized data.
    continuous=False: `log_prob` is the log-probability of the integer levels.
    """
    if continuous:
        log_prob = log_prob + dim * math.log(2.0 / levels)
    return -log_prob / (dim * math.log(2.0))


def batched_log_prob(log_prob: Callable[[Tensor], Tensor], x: Tensor, *, batch_size: int = 500,
                     device: torch.device | str | None = None) -> Tensor:
    """log_prob over x (N, ...) in batches on `device` (default: x's), no grad -> (N,) float64 CPU."""
    device = torch.device(device) if device is not None else x.device
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            lp = log_prob(x[i : i + batch_size].to(device))
            if lp.shape != (len(x[i : i + batch_size]),):
                raise ValueError(f"log_prob must return one value per sample; got shape {tuple(lp.shape)}")
            out.append(lp.double().cpu())
    return torch.cat(out)


def image_bits_per_dim(log_prob: Callable[[Tensor], Tensor], x: Tensor, *, levels: int = LEVELS,
                       continuous: bool = True, draws: int = 5, generator: torch.Generator | None = None,
                       batch_size: int = 500, device: torch.device | str | None = None) -> Tensor:
    """Per-image bits/dim (N,) of images x (N, C, H, W) in [-1, 1] with `levels` grey levels.

    continuous=True: log_prob is a density, evaluated on `draws` uniform dequantizations of x
    (drawn with `generator`) and averaged (the Monte-Carlo estimate of E_u log p, a bound on
    log P of the levels); continuous=False: log_prob is log P of the levels, evaluated once.
    """
    dim = math.prod(x.shape[1:])
    if not continuous:
        return bits_per_dim(batched_log_prob(log_prob, x, batch_size=batch_size, device=device), dim,
                            levels=levels, continuous=False)
    x = x.to(generator.device) if generator is not None else x
    lp = torch.stack([batched_log_prob(log_prob, dequantize(x, generator, levels), batch_size=batch_size,
                                       device=device) for _ in range(draws)]).mean(0)  # (N,)
    return bits_per_dim(lp, dim, levels=levels, continuous=True)
