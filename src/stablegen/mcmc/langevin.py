"""Unadjusted Langevin dynamics: MALA without the Metropolis-Hastings step.

Roberts & Tweedie 1996, "Exponential convergence of Langevin distributions and their
discrete approximations" (the unadjusted Langevin algorithm, ULA); with the drift and noise
scales set apart and the drift clipped, as energy-based models sample in training (Welling &
Teh 2011, "Bayesian learning via stochastic gradient Langevin dynamics"; Du & Mordatch 2019,
"Implicit generation and generalization in energy-based models", section 3.1); with an
optional projection onto a box after each move (Bubeck, Eldan & Lehec 2018, "Sampling from a
log-concave distribution with projected Langevin Monte Carlo"):

    x' = proj( x + lambda * clip(grad log p(x), -c, c) + sigma * eps ),    eps ~ N(0, I)

sigma = sqrt(2 lambda) (the default) and no clipping is ULA, whose law approaches p as
lambda -> 0; MALA's step size h is lambda = h^2 / 2, sigma = h. A smaller sigma samples
p^(1/T) at temperature T = sigma^2 / (2 lambda) (for small lambda).

Positions may be (C, D) or any (C, ...) shape, e.g. images (C, 1, 8, 8); `logdensity_fn`
maps them to (C,). `init` / `step` follow the package's contract (see base.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import GradState, LogDensityFn, logdensity_and_grad, normal, per_chain


class LangevinInfo(NamedTuple):
    """What one Langevin step did, per chain."""

    grad_norm: Tensor  # (C,) norm of the unclipped log-density gradient at the start point
    clipped_fraction: Tensor  # (C,) share of gradient entries the clip changed (0 without clip)
    is_divergent: Tensor  # (C,) bool: the new position has a non-finite log-density
    num_grad_evals: Tensor  # (C,) int, always 1


def init(position: Tensor, logdensity_fn: LogDensityFn) -> GradState:
    """State at `position` (C, ...), with the log-density and its gradient."""
    return GradState(position, *_logdensity_and_grad(logdensity_fn, position))


def _logdensity_and_grad(fn: LogDensityFn, position: Tensor) -> tuple[Tensor, Tensor]:
    """base.logdensity_and_grad for positions of any shape (C, ...): it sees them as (C, D)."""
    shape = position.shape
    value, grad = logdensity_and_grad(lambda z: fn(z.reshape(shape)), position.reshape(shape[0], -1))
    return value, grad.reshape(shape)


def _column(value: float | Tensor, like: Tensor) -> Tensor:
    """A scalar or per-chain (C,) parameter shaped (C, 1, ..., 1) or (1, ..., 1) to broadcast over `like`."""
    return per_chain(value, like.flatten(1)).reshape(-1, *[1] * (like.dim() - 1))


def step(
    state: GradState,
    logdensity_fn: LogDensityFn,
    step_size: float | Tensor,
    generator: torch.Generator,
    *,
    noise_std: float | Tensor | None = None,
    grad_clip: float | None = None,
    bounds: tuple[float, float] | None = None,
) -> tuple[GradState, LangevinInfo]:
    """One Langevin move of every chain; the new state carries the gradient for the next move.

    step_size: lambda, scalar or per chain (C,); noise_std: sigma (None: sqrt(2 lambda), ULA);
    grad_clip: c, element-wise bound on the gradient in the drift (None: no clip);
    bounds: (low, high) box the new positions are clipped into (None: no projection).
    """
    x, grad = state.position, state.logdensity_grad  # (C, ...)
    lam = _column(step_size, x)
    sigma = (2 * lam).sqrt() if noise_std is None else _column(noise_std, x)
    drift = grad if grad_clip is None else grad.clamp(-grad_clip, grad_clip)
    clipped = (drift != grad).flatten(1).float().mean(1)  # (C,)
    new = x + lam * drift + sigma * normal(x, generator)
    if bounds is not None:
        new = new.clamp(bounds[0], bounds[1])
    logp_new, grad_new = _logdensity_and_grad(logdensity_fn, new)
    info = LangevinInfo(grad.flatten(1).norm(dim=1), clipped, ~torch.isfinite(logp_new),
                        torch.ones(x.shape[0], dtype=torch.long, device=x.device))
    return GradState(new, logp_new, grad_new), info
