"""Random-walk Metropolis-Hastings.

Metropolis et al. 1953, "Equation of state calculations by fast computing machines";
Hastings 1970, "Monte Carlo sampling methods using Markov chains and their applications".
Gaussian proposal x' = x + h * sqrt(M^-1) * eps with a diagonal scale M^-1. Roberts, Gelman &
Gilks 1997 ("Weak convergence and optimal scaling of random walk Metropolis algorithms")
show the optimal acceptance rate tends to 0.234 as D grows, with h ~ 2.38 / sqrt(D) on a
standardized target; the `sample` driver adapts h toward that rate.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import LogDensityFn, State, diagonal, logdensity, metropolis_accept, normal, per_chain

TARGET_ACCEPTANCE = 0.234


class RWMHInfo(NamedTuple):
    """What one random-walk step did, per chain."""

    acceptance_rate: Tensor  # (C,) min(1, p(x') / p(x))
    is_accepted: Tensor  # (C,) bool
    is_divergent: Tensor  # (C,) bool, always False (kept so every kernel reports it)
    num_grad_evals: Tensor  # (C,) int, always 0


def init(position: Tensor, logdensity_fn: LogDensityFn) -> State:
    """State at `position` (C, D)."""
    return State(position, logdensity(logdensity_fn, position))


def step(
    state: State,
    logdensity_fn: LogDensityFn,
    step_size: float | Tensor,
    inverse_mass_matrix: Tensor | None,
    generator: torch.Generator,
) -> tuple[State, RWMHInfo]:
    """One Metropolis-Hastings step with a symmetric Gaussian proposal for every chain."""
    x = state.position  # (C, D)
    h = per_chain(step_size, x)  # (C, 1) or (1, 1)
    scale = diagonal(inverse_mass_matrix, x).sqrt()  # (C, D)
    proposal = x + h * scale * normal(x, generator)  # (C, D)
    logp_new = logdensity(logdensity_fn, proposal)  # (C,)
    accept_prob, accepted = metropolis_accept(logp_new - state.logdensity, generator)
    new = State(
        torch.where(accepted[:, None], proposal, x),
        torch.where(accepted, logp_new, state.logdensity),
    )
    zeros = torch.zeros_like(accepted)
    return new, RWMHInfo(accept_prob, accepted, zeros, torch.zeros_like(accepted, dtype=torch.long))
