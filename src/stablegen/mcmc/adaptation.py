"""Warmup adaptation: dual-averaging step size, windowed diagonal mass matrix, initial step.

- Dual averaging (Nesterov 2009, "Primal-dual subgradient methods for convex problems"), as
  used for HMC step sizes in Hoffman & Gelman 2014 (section 3.2, Algorithm 5) with their
  constants t0 = 10, kappa = 0.75, gamma = 0.05 and mu = log(10 * h0).
- Windowed estimation of a diagonal inverse mass matrix from the warmup draws, Stan's
  schedule (Stan Reference Manual, "HMC algorithm parameters: automatic parameter tuning"):
  a fast initial buffer (75 iterations), slow windows doubling from 25, a fast terminal
  buffer (50); variances by Welford's online algorithm (Welford 1962), shrunk toward 1e-3
  as Stan does.
- An initial step size by doubling or halving until a one-leapfrog acceptance crosses 1/2
  (Hoffman & Gelman 2014, Algorithm 4).
Every quantity is kept per chain, so chains stay independent during warmup too (the
driver's response to divergences, `sampling._warmup`, is the one decision they share).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .base import GradState, LogDensityFn
from .integrators import Point, energy, leapfrog, sample_momentum

T0, KAPPA, GAMMA = 10.0, 0.75, 0.05


# ---- dual averaging ---------------------------------------------------------------------
class DualAveragingState(NamedTuple):
    """Per-chain dual-averaging state for log step sizes."""

    log_step_size: Tensor  # (C,) current iterate log h_t
    log_step_size_avg: Tensor  # (C,) weighted average log h_bar_t, used after warmup
    h_bar: Tensor  # (C,) running average of (target - acceptance)
    mu: Tensor  # (C,) shrinkage point log(10 * h0)
    t: int  # iterations so far


def dual_averaging_init(step_size: Tensor) -> DualAveragingState:
    """Start (or restart) dual averaging at step sizes (C,)."""
    log_h = step_size.log()
    return DualAveragingState(log_h, torch.zeros_like(log_h), torch.zeros_like(log_h),
                              math.log(10.0) + log_h, 0)


def dual_averaging_update(
    state: DualAveragingState,
    acceptance_rate: Tensor,
    target: float,
    *,
    t0: float = T0,
    kappa: float = KAPPA,
    gamma: float = GAMMA,
) -> DualAveragingState:
    """One update of Hoffman & Gelman 2014, Algorithm 5, with observed acceptance (C,)."""
    t = state.t + 1
    eta = 1.0 / (t + t0)
    accept = torch.nan_to_num(acceptance_rate, nan=0.0).to(state.h_bar.dtype)
    h_bar = (1 - eta) * state.h_bar + eta * (target - accept)
    log_h = state.mu - math.sqrt(t) / gamma * h_bar
    weight = t ** (-kappa)
    log_h_avg = weight * log_h + (1 - weight) * state.log_step_size_avg
    return DualAveragingState(log_h, log_h_avg, h_bar, state.mu, t)


# ---- windowed diagonal mass matrix --------------------------------------------------------
class WelfordState(NamedTuple):
    """Running per-chain mean and sum of squared deviations of the positions."""

    count: int
    mean: Tensor  # (C, D)
    m2: Tensor  # (C, D)


def welford_init(like: Tensor) -> WelfordState:
    """Empty estimator for positions shaped like `like` (C, D)."""
    return WelfordState(0, torch.zeros_like(like), torch.zeros_like(like))


def welford_update(state: WelfordState, x: Tensor) -> WelfordState:
    """Add one position per chain, x (C, D)."""
    count = state.count + 1
    delta = x - state.mean
    mean = state.mean + delta / count
    return WelfordState(count, mean, state.m2 + delta * (x - mean))


def welford_variance(state: WelfordState, *, pooled: bool = False) -> Tensor:
    """Stan's regularized variance (C, D): n/(n+5) * var + 1e-3 * 5/(n+5).

    pooled: one estimate from all chains' draws together (Chan, Golub & LeVeque 1979
    for combining the per-chain sums), broadcast to every chain; n counts all draws.
    """
    n, m2 = state.count, state.m2
    if pooled:
        c = m2.shape[0]
        between = ((state.mean - state.mean.mean(0)) ** 2).sum(0)  # (D,)
        m2 = (m2.sum(0) + n * between).expand_as(state.m2)
        n = n * c
    var = m2 / max(n - 1, 1)
    return (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))


def warmup_windows(num_warmup: int) -> list[tuple[int, int]]:
    """Stan's warmup schedule as inclusive (start, end) windows over iterations.

    The first window is the fast initial buffer, the last the fast terminal buffer, the ones
    between are slow windows at whose end the mass matrix is re-estimated. With fewer than
    20 iterations there is a single window (step size only); with fewer than 150 the
    buffers are 15 % and 10 % of warmup, as in Stan and NumPyro.
    """
    if num_warmup < 20:
        return [(0, num_warmup - 1)] if num_warmup > 0 else []
    init_buffer, term_buffer, base_window = 75, 50, 25
    if num_warmup < init_buffer + term_buffer + base_window:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - init_buffer - term_buffer
    windows = [(0, init_buffer - 1)]
    end_slow = num_warmup - term_buffer
    start, size = init_buffer, base_window
    while start < end_slow:
        if 3 * size <= end_slow - start:
            next_size = 2 * size
        else:
            size, next_size = end_slow - start, size
        windows.append((start, start + size - 1))
        start, size = start + size, next_size
    windows.append((end_slow, num_warmup - 1))
    return windows


# ---- initial step size -----------------------------------------------------------------------
def find_reasonable_step_size(
    state: GradState,
    logdensity_fn: LogDensityFn,
    step_size: Tensor,
    inverse_mass_matrix: Tensor,
    generator: torch.Generator,
    *,
    max_iterations: int = 100,
) -> tuple[Tensor, Tensor]:
    """Hoffman & Gelman 2014, Algorithm 4, per chain.

    From step sizes (C,), double (or halve) each chain's step until the acceptance ratio of a
    single leapfrog step (same momentum throughout) crosses 1/2; the first step size past the
    crossing is returned. Returns the step sizes (C,) and the gradient
    evaluations spent per chain (C,).
    """
    x = state.position
    start = Point(x, sample_momentum(x, inverse_mass_matrix, generator), state.logdensity,
                  state.logdensity_grad)
    h0 = energy(start, inverse_mass_matrix)

    def log_accept(h: Tensor) -> Tensor:
        end = leapfrog(start, logdensity_fn, h[:, None], inverse_mass_matrix)
        return torch.nan_to_num(h0 - energy(end, inverse_mass_matrix), nan=-torch.inf)

    h = step_size.clone()
    evals = torch.ones_like(h, dtype=torch.long)
    # direction +1: acceptance above 1/2, grow the step; -1: shrink it
    direction = torch.where(log_accept(h) > math.log(0.5), 1.0, -1.0).to(h.dtype)
    searching = torch.ones_like(h, dtype=torch.bool)
    for _ in range(max_iterations):
        candidate = torch.where(searching, h * 2.0**direction, h)
        crossed = direction * log_accept(candidate) <= direction * math.log(0.5)
        evals += searching
        h = candidate
        searching &= ~crossed
        if not bool(searching.any()):
            break
    return h, evals
