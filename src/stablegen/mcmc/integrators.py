"""Leapfrog (velocity Verlet) integration of Hamiltonian dynamics, shared by HMC and NUTS.

Duane, Kennedy, Pendleton & Roweth 1987, "Hybrid Monte Carlo"; Neal 2011, "MCMC using
Hamiltonian dynamics" (section 2.3). Potential U(x) = -log p(x), kinetic K(r) = r^T M^-1 r / 2
with a diagonal inverse mass matrix M^-1; momenta are drawn from N(0, M).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import LogDensityFn, logdensity_and_grad, normal


class Point(NamedTuple):
    """A point in phase space for a batch of chains."""

    position: Tensor  # (C, D)
    momentum: Tensor  # (C, D)
    logdensity: Tensor  # (C,)
    logdensity_grad: Tensor  # (C, D)


def sample_momentum(like: Tensor, inverse_mass_matrix: Tensor, generator: torch.Generator) -> Tensor:
    """r ~ N(0, M) for a diagonal M^-1 (C, D)."""
    return normal(like, generator) / inverse_mass_matrix.sqrt()


def kinetic_energy(momentum: Tensor, inverse_mass_matrix: Tensor) -> Tensor:
    """K(r) = r^T M^-1 r / 2, (C,)."""
    return 0.5 * (momentum.square() * inverse_mass_matrix).sum(-1)


def energy(point: Point, inverse_mass_matrix: Tensor) -> Tensor:
    """Hamiltonian H = -log p(x) + K(r), (C,); +inf where the log-density is not finite."""
    return -point.logdensity + kinetic_energy(point.momentum, inverse_mass_matrix)


def leapfrog(
    point: Point, logdensity_fn: LogDensityFn, step_size: Tensor, inverse_mass_matrix: Tensor
) -> Point:
    """One leapfrog step of size `step_size` (C, 1) (negative integrates backward in time).

    One gradient evaluation: the gradient at the start is carried in `point`.
    """
    half = 0.5 * step_size  # (C, 1)
    r_half = torch.addcmul(point.momentum, half, point.logdensity_grad)  # (C, D)
    x_new = torch.addcmul(point.position, step_size * inverse_mass_matrix, r_half)  # (C, D)
    logp, grad = logdensity_and_grad(logdensity_fn, x_new)
    return Point(x_new, torch.addcmul(r_half, half, grad), logp, grad)
