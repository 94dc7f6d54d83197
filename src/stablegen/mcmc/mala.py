"""Metropolis-adjusted Langevin algorithm (MALA).

Roberts & Tweedie 1996, "Exponential convergence of Langevin distributions and their
discrete approximations"; preconditioned form of Girolami & Calderhead 2011 (section 5)
with a fixed diagonal M^-1:

    x' = x + (h^2 / 2) M^-1 grad log p(x) + h sqrt(M^-1) eps,    eps ~ N(0, I)

followed by a Metropolis-Hastings correction with the asymmetric proposal density.
Roberts & Rosenthal 1998 ("Optimal scaling of discrete approximations to Langevin
diffusions") give 0.574 as the asymptotically optimal acceptance rate.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import (
    GradState,
    LogDensityFn,
    diagonal,
    logdensity_and_grad,
    metropolis_accept,
    normal,
    per_chain,
)

TARGET_ACCEPTANCE = 0.574


class MALAInfo(NamedTuple):
    """What one MALA step did, per chain."""

    acceptance_rate: Tensor  # (C,) Metropolis-Hastings acceptance probability
    is_accepted: Tensor  # (C,) bool
    is_divergent: Tensor  # (C,) bool: the proposal had a non-finite log-density
    num_grad_evals: Tensor  # (C,) int, always 1


def init(position: Tensor, logdensity_fn: LogDensityFn) -> GradState:
    """State at `position` (C, D), with the log-density gradient."""
    return GradState(position, *logdensity_and_grad(logdensity_fn, position))


def _log_proposal(x_to: Tensor, x_from: Tensor, grad_from: Tensor, h: Tensor, m_inv: Tensor) -> Tensor:
    """log q(x_to | x_from) up to a constant shared by both directions, (C,)."""
    mean = x_from + 0.5 * h**2 * m_inv * grad_from  # (C, D)
    return -0.5 * ((x_to - mean) ** 2 / (h**2 * m_inv)).sum(-1)


def step(
    state: GradState,
    logdensity_fn: LogDensityFn,
    step_size: float | Tensor,
    inverse_mass_matrix: Tensor | None,
    generator: torch.Generator,
) -> tuple[GradState, MALAInfo]:
    """One Langevin proposal and Metropolis-Hastings correction for every chain."""
    x, grad = state.position, state.logdensity_grad  # (C, D)
    h = per_chain(step_size, x)  # (C, 1) or (1, 1)
    m_inv = diagonal(inverse_mass_matrix, x)  # (C, D)
    proposal = x + 0.5 * h**2 * m_inv * grad + h * m_inv.sqrt() * normal(x, generator)
    logp_new, grad_new = logdensity_and_grad(logdensity_fn, proposal)
    log_ratio = (
        logp_new
        - state.logdensity
        + _log_proposal(x, proposal, grad_new, h, m_inv)
        - _log_proposal(proposal, x, grad, h, m_inv)
    )
    accept_prob, accepted = metropolis_accept(log_ratio, generator)
    keep = accepted[:, None]
    new = GradState(
        torch.where(keep, proposal, x),
        torch.where(accepted, logp_new, state.logdensity),
        torch.where(keep, grad_new, grad),
    )
    divergent = ~torch.isfinite(logp_new)
    return new, MALAInfo(accept_prob, accepted, divergent, torch.ones_like(accepted, dtype=torch.long))
