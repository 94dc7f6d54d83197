"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps.

Duane, Kennedy, Pendleton & Roweth 1987, "Hybrid Monte Carlo"; Neal 2011, "MCMC using
Hamiltonian dynamics". Draw r ~ N(0, M), integrate L leapfrog steps of size h, accept the
end point with probability min(1, exp(H0 - H1)). A trajectory whose energy error exceeds
`max_delta_energy` (or turns non-finite) is a *divergence* (Betancourt 2017, "A conceptual
introduction to Hamiltonian Monte Carlo", section 6.2) and is rejected. The `sample` driver
adapts h by dual averaging toward acceptance 0.65 and M^-1 in windows (Stan's warmup).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import GradState, LogDensityFn, diagonal, logdensity_and_grad, metropolis_accept, per_chain
from .integrators import Point, energy, leapfrog, sample_momentum

TARGET_ACCEPTANCE = 0.65


class HMCInfo(NamedTuple):
    """What one HMC transition did, per chain."""

    acceptance_rate: Tensor  # (C,) min(1, exp(H0 - H1))
    is_accepted: Tensor  # (C,) bool
    is_divergent: Tensor  # (C,) bool: energy error above max_delta_energy somewhere on the path
    energy: Tensor  # (C,) Hamiltonian of the returned state with its momentum
    num_grad_evals: Tensor  # (C,) int: leapfrog steps taken (one gradient each)


def init(position: Tensor, logdensity_fn: LogDensityFn) -> GradState:
    """State at `position` (C, D), with the log-density gradient."""
    return GradState(position, *logdensity_and_grad(logdensity_fn, position))


def step(
    state: GradState,
    logdensity_fn: LogDensityFn,
    step_size: float | Tensor,
    inverse_mass_matrix: Tensor | None,
    num_integration_steps: int,
    generator: torch.Generator,
    *,
    max_delta_energy: float = 1000.0,
) -> tuple[GradState, HMCInfo]:
    """One HMC transition of `num_integration_steps` leapfrog steps for every chain."""
    if num_integration_steps < 1:
        raise ValueError(f"num_integration_steps must be >= 1, got {num_integration_steps}")
    x = state.position  # (C, D)
    h = per_chain(step_size, x).expand(x.shape[0], 1)  # (C, 1)
    m_inv = diagonal(inverse_mass_matrix, x)  # (C, D)
    start = Point(x, sample_momentum(x, m_inv, generator), state.logdensity, state.logdensity_grad)
    h0 = energy(start, m_inv)  # (C,)
    point, divergent = start, torch.zeros_like(h0, dtype=torch.bool)
    for _ in range(num_integration_steps):
        point = leapfrog(point, logdensity_fn, h, m_inv)
        delta = torch.nan_to_num(energy(point, m_inv) - h0, nan=torch.inf)
        divergent |= delta > max_delta_energy
    h1 = energy(point, m_inv)
    log_ratio = torch.where(divergent, torch.full_like(h0, -torch.inf), h0 - h1)
    accept_prob, accepted = metropolis_accept(log_ratio, generator)
    keep = accepted[:, None]
    new = GradState(
        torch.where(keep, point.position, x),
        torch.where(accepted, point.logdensity, state.logdensity),
        torch.where(keep, point.logdensity_grad, state.logdensity_grad),
    )
    steps = torch.full_like(accepted, num_integration_steps, dtype=torch.long)
    return new, HMCInfo(accept_prob, accepted, divergent, torch.where(accepted, h1, h0), steps)
