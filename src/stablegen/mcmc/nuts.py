"""The No-U-Turn Sampler (NUTS), multinomial variant, vectorized over chains.

Hoffman & Gelman 2014, "The No-U-Turn Sampler: adaptively setting path lengths in
Hamiltonian Monte Carlo"; Betancourt 2017, "A conceptual introduction to Hamiltonian Monte
Carlo" (appendix A: multinomial sampling of the trajectory, biased progressive sampling at
the top level, the generalized no-U-turn criterion on summed momenta). The subtree is built
iteratively with momentum checkpoints as in NumPyro (Phan, Pradhan & Jankowiak 2019,
"Composable effects for flexible and accelerated probabilistic programming in NumPyro").

Vectorization: every chain advances the same doubling iteration j (a subtree of 2^j leaves)
and the same leaf index inside it, so the checkpoint bookkeeping is plain Python integers.
A chain that finished (U-turn, divergence, depth cap) is masked out: its tree is neither
extended nor sampled from any more (the batch still computes its leapfrog steps, unused) and
those gradient evaluations are not counted, so `num_grad_evals` is the algorithm's own cost
per chain, as a one-chain implementation would report it. The wall time of an iteration is
that of the deepest tree among the chains.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import GradState, LogDensityFn, diagonal, logdensity_and_grad, per_chain, uniform
from .integrators import Point, energy, leapfrog, sample_momentum

TARGET_ACCEPTANCE = 0.8


class NUTSInfo(NamedTuple):
    """What one NUTS transition did, per chain."""

    acceptance_rate: Tensor  # (C,) mean of min(1, exp(H0 - H)) over all leaves built
    is_divergent: Tensor  # (C,) bool: some leaf's energy error exceeded max_delta_energy
    tree_depth: Tensor  # (C,) int: doublings performed
    energy: Tensor  # (C,) Hamiltonian of the selected point
    num_grad_evals: Tensor  # (C,) int: leapfrog steps taken (one gradient each)


def init(position: Tensor, logdensity_fn: LogDensityFn) -> GradState:
    """State at `position` (C, D), with the log-density gradient."""
    return GradState(position, *logdensity_and_grad(logdensity_fn, position))


def _select(mask: Tensor, a: Point | GradState, b: Point | GradState) -> Point | GradState:
    """Per chain: the fields of `a` where mask (C,) is True, else those of `b`."""
    return type(b)(*(torch.where(mask if u.ndim == 1 else mask[:, None], u, v) for u, v in zip(a, b)))


def _is_turning(r_left: Tensor, r_right: Tensor, r_sum: Tensor, m_inv: Tensor) -> Tensor:
    """Generalized no-U-turn criterion (Betancourt 2017, appendix A.4.2), (C,) bool.

    rho = sum of momenta minus half the end momenta (NumPyro's trapezoid form); the path
    turns when the velocity M^-1 r at either end points against rho.
    """
    v_rho = m_inv * (r_sum - 0.5 * (r_left + r_right))  # (C, D)
    dots = (torch.stack((r_left, r_right)) * v_rho).sum(-1)  # (2, C)
    return (dots <= 0).any(0)


def _checkpoint_range(n: int) -> tuple[int, int]:
    """Checkpoints to test after leaf n of a subtree (NumPyro's `_leaf_idx_to_ckpt_idxs`).

    idx_max = number of set bits of n >> 1; the trailing run of set bits of n is the number
    of sub-subtrees that leaf n completes, each tested against its own checkpoint.
    """
    idx_max = bin(n >> 1).count("1")
    trailing_ones = 0
    while (n >> trailing_ones) & 1:
        trailing_ones += 1
    return idx_max - trailing_ones + 1, idx_max


def step(
    state: GradState,
    logdensity_fn: LogDensityFn,
    step_size: float | Tensor,
    inverse_mass_matrix: Tensor | None,
    generator: torch.Generator,
    *,
    max_tree_depth: int = 10,
    max_delta_energy: float = 1000.0,
) -> tuple[GradState, NUTSInfo]:
    """One NUTS transition for every chain."""
    if max_tree_depth < 1:
        raise ValueError(f"max_tree_depth must be >= 1, got {max_tree_depth}")
    x = state.position  # (C, D)
    c = x.shape[0]
    h = per_chain(step_size, x).expand(c, 1)  # (C, 1)
    m_inv = diagonal(inverse_mass_matrix, x)  # (C, D)
    start = Point(x, sample_momentum(x, m_inv, generator), state.logdensity, state.logdensity_grad)
    h0 = energy(start, m_inv)  # (C,)

    left, right = start, start
    proposal, proposal_delta = state, torch.zeros_like(h0)  # selected point, its H - H0
    log_weight = torch.zeros_like(h0)  # (C,) log sum over leaves of exp(H0 - H)
    r_sum = start.momentum  # (C, D)
    alive = torch.ones(c, dtype=torch.bool, device=x.device)  # tree still doubling
    divergent = torch.zeros_like(alive)
    depth = torch.zeros(c, dtype=torch.long, device=x.device)
    num_steps = torch.zeros_like(depth)
    sum_accept = torch.zeros_like(h0)
    ckpt_r = x.new_zeros(max_tree_depth, *x.shape)  # (J, C, D) momentum at checkpoint leaves
    ckpt_r_sum = x.new_zeros(max_tree_depth, *x.shape)  # (J, C, D) running sum up to them

    for j in range(max_tree_depth):
        if not bool(alive.any()):
            break
        forward = uniform(c, h0, generator) < 0.5  # (C,) direction of this doubling
        eps = torch.where(forward[:, None], h, -h)  # (C, 1)
        # Chains that stop inside the subtree keep integrating, unobserved: every quantity
        # below is masked by `active`, and a stopped chain is never merged or extended.
        leaf = _select(forward, right, left)
        sub_proposal, sub_delta = state, torch.zeros_like(h0)
        sub_log_weight = torch.full_like(h0, -torch.inf)
        sub_r_sum = torch.zeros_like(r_sum)
        sub_stopped = torch.zeros_like(alive)  # U-turn or divergence inside the subtree
        active = alive.clone()  # (C,) still extending this subtree

        for n in range(2**j):
            if not bool(active.any()):
                break
            leaf = leapfrog(leaf, logdensity_fn, eps, m_inv)
            delta = torch.nan_to_num(energy(leaf, m_inv) - h0, nan=torch.inf)  # (C,) H - H0
            num_steps += active
            sum_accept += torch.where(active, (-delta).clamp(max=0.0).exp(), 0.0)
            # multinomial sampling inside the subtree: keep the new leaf with probability
            # w_leaf / (w_subtree + w_leaf), a draw over the leaves by their weights exp(-delta)
            new_log_weight = torch.logaddexp(sub_log_weight, -delta)
            take = active & (uniform(c, h0, generator) < (-delta - new_log_weight).exp())
            leaf_state = GradState(leaf.position, leaf.logdensity, leaf.logdensity_grad)
            sub_proposal = _select(take, leaf_state, sub_proposal)
            sub_delta = torch.where(take, delta, sub_delta)
            sub_log_weight = torch.where(active, new_log_weight, sub_log_weight)
            sub_r_sum = sub_r_sum + torch.where(active[:, None], leaf.momentum, 0.0)
            idx_min, idx_max = _checkpoint_range(n)
            if n % 2 == 0:
                ckpt_r[idx_max] = leaf.momentum
                ckpt_r_sum[idx_max] = sub_r_sum
            stop = delta > max_delta_energy
            divergent |= active & stop
            for i in range(idx_max, idx_min - 1, -1):
                span_sum = sub_r_sum - ckpt_r_sum[i] + ckpt_r[i]  # momenta from checkpoint i to n
                stop |= _is_turning(ckpt_r[i], leaf.momentum, span_sum, m_inv)
            sub_stopped |= active & stop
            active &= ~stop

        # biased progressive sampling at the top level: move to the new subtree with
        # probability min(1, w_new / w_old); never into a subtree that turned or diverged
        accept_sub = torch.where(sub_stopped, 0.0, (sub_log_weight - log_weight).exp())
        take = alive & (uniform(c, h0, generator) < accept_sub)
        proposal = _select(take, sub_proposal, proposal)
        proposal_delta = torch.where(take, sub_delta, proposal_delta)
        log_weight = torch.where(alive, torch.logaddexp(log_weight, sub_log_weight), log_weight)
        right = _select(alive & forward, leaf, right)
        left = _select(alive & ~forward, leaf, left)
        r_sum = torch.where(alive[:, None], r_sum + sub_r_sum, r_sum)
        depth += alive
        alive &= ~sub_stopped & ~_is_turning(left.momentum, right.momentum, r_sum, m_inv)

    info = NUTSInfo(
        acceptance_rate=sum_accept / num_steps.clamp(min=1),
        is_divergent=divergent,
        tree_depth=depth,
        energy=h0 + proposal_delta,
        num_grad_evals=num_steps,
    )
    return proposal, info
