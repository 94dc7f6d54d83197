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

Structure (blackjax's split of a kernel): `_build_subtree` integrates one subtree and draws
its proposal, `_extend` merges it into the `Trajectory` by progressive sampling, `step` runs
the doublings and returns the `NUTSInfo`.
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


class Trajectory(NamedTuple):
    """The trajectory built so far, per chain: its two ends and its multinomial sample."""

    left: Point  # backward end
    right: Point  # forward end
    r_sum: Tensor  # (C, D) sum of the momenta of all its leaves
    log_weight: Tensor  # (C,) log sum over its leaves of exp(H0 - H)
    proposal: GradState  # the point drawn from its leaves so far
    proposal_delta: Tensor  # (C,) H - H0 of that point


class Subtree(NamedTuple):
    """A subtree of 2^j leaves grown from one end of the trajectory, per chain."""

    end: Point  # its last (outermost) leaf
    r_sum: Tensor  # (C, D)
    log_weight: Tensor  # (C,) -inf for a chain that did not grow one
    proposal: GradState  # the leaf drawn from it by multinomial sampling
    proposal_delta: Tensor  # (C,)
    stopped: Tensor  # (C,) bool: a U-turn or a divergence inside it


class Tally(NamedTuple):
    """Running totals over the leaves of one transition, per chain (for `NUTSInfo`)."""

    sum_accept: Tensor  # (C,) sum over leaves of min(1, exp(H0 - H))
    num_steps: Tensor  # (C,) int: leapfrog steps taken by chains still building
    divergent: Tensor  # (C,) bool


def _build_subtree(
    leaf: Point,
    state: GradState,
    depth: int,
    eps: Tensor,
    h0: Tensor,
    alive: Tensor,
    tally: Tally,
    logdensity_fn: LogDensityFn,
    m_inv: Tensor,
    generator: torch.Generator,
    max_delta_energy: float,
) -> tuple[Subtree, Tally]:
    """Integrate 2^depth leapfrog steps of size eps (C, 1) from `leaf`, iteratively.

    Leaves are drawn by multinomial sampling (keep the new leaf with probability
    w_leaf / (w_subtree + w_leaf), weights exp(H0 - H)); every sub-subtree a leaf completes
    is tested for a U-turn against its momentum checkpoint (NumPyro's iterative scheme).
    A chain that stops (U-turn, divergence) keeps integrating, unobserved: every quantity
    is masked by `active`, and the caller never merges or extends a stopped subtree.
    """
    c = h0.shape[0]
    proposal, proposal_delta = state, torch.zeros_like(h0)
    log_weight = torch.full_like(h0, -torch.inf)
    r_sum = torch.zeros_like(leaf.momentum)
    stopped = torch.zeros_like(alive)
    active = alive.clone()  # (C,) still extending this subtree
    ckpt_r = leaf.momentum.new_zeros(max(depth, 1), *leaf.momentum.shape)  # (J, C, D) momenta at checkpoints
    ckpt_r_sum = torch.zeros_like(ckpt_r)  # (J, C, D) running sums up to them
    sum_accept, num_steps, divergent = tally

    for n in range(2**depth):
        if not bool(active.any()):
            break
        leaf = leapfrog(leaf, logdensity_fn, eps, m_inv)
        delta = torch.nan_to_num(energy(leaf, m_inv) - h0, nan=torch.inf)  # (C,) H - H0
        num_steps = num_steps + active
        sum_accept = sum_accept + torch.where(active, (-delta).clamp(max=0.0).exp(), 0.0)
        new_log_weight = torch.logaddexp(log_weight, -delta)
        take = active & (uniform(c, h0, generator) < (-delta - new_log_weight).exp())
        proposal = _select(take, GradState(leaf.position, leaf.logdensity, leaf.logdensity_grad), proposal)
        proposal_delta = torch.where(take, delta, proposal_delta)
        log_weight = torch.where(active, new_log_weight, log_weight)
        r_sum = r_sum + torch.where(active[:, None], leaf.momentum, 0.0)
        idx_min, idx_max = _checkpoint_range(n)
        if n % 2 == 0:
            ckpt_r[idx_max] = leaf.momentum
            ckpt_r_sum[idx_max] = r_sum
        stop = delta > max_delta_energy
        divergent = divergent | (active & stop)
        for i in range(idx_max, idx_min - 1, -1):
            span_sum = r_sum - ckpt_r_sum[i] + ckpt_r[i]  # momenta from checkpoint i to n
            stop |= _is_turning(ckpt_r[i], leaf.momentum, span_sum, m_inv)
        stopped |= active & stop
        active &= ~stop

    subtree = Subtree(leaf, r_sum, log_weight, proposal, proposal_delta, stopped)
    return subtree, Tally(sum_accept, num_steps, divergent)


def _extend(
    trajectory: Trajectory,
    subtree: Subtree,
    forward: Tensor,
    alive: Tensor,
    generator: torch.Generator,
) -> Trajectory:
    """Append the subtree at the end it grew from (chains in `alive` only).

    Biased progressive sampling (Betancourt 2017, A.3.2): move the proposal into the new
    subtree with probability min(1, w_new / w_old), never into one that turned or diverged.
    """
    c = alive.shape[0]
    accept = torch.where(subtree.stopped, 0.0, (subtree.log_weight - trajectory.log_weight).exp())
    take = alive & (uniform(c, accept, generator) < accept)
    return Trajectory(
        left=_select(alive & ~forward, subtree.end, trajectory.left),
        right=_select(alive & forward, subtree.end, trajectory.right),
        r_sum=torch.where(alive[:, None], trajectory.r_sum + subtree.r_sum, trajectory.r_sum),
        log_weight=torch.where(alive, torch.logaddexp(trajectory.log_weight, subtree.log_weight),
                               trajectory.log_weight),
        proposal=_select(take, subtree.proposal, trajectory.proposal),
        proposal_delta=torch.where(take, subtree.proposal_delta, trajectory.proposal_delta),
    )


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
    """One NUTS transition for every chain: draw a momentum, double the trajectory in a
    random direction until it turns, diverges or reaches max_tree_depth, return its sample."""
    if max_tree_depth < 1:
        raise ValueError(f"max_tree_depth must be >= 1, got {max_tree_depth}")
    x = state.position  # (C, D)
    c = x.shape[0]
    h = per_chain(step_size, x).expand(c, 1)  # (C, 1)
    m_inv = diagonal(inverse_mass_matrix, x)  # (C, D)
    start = Point(x, sample_momentum(x, m_inv, generator), state.logdensity, state.logdensity_grad)
    h0 = energy(start, m_inv)  # (C,)

    zeros = torch.zeros_like(h0)
    trajectory = Trajectory(start, start, start.momentum, zeros, state, zeros)
    alive = torch.ones(c, dtype=torch.bool, device=x.device)  # (C,) tree still doubling
    tally = Tally(zeros, torch.zeros(c, dtype=torch.long, device=x.device), torch.zeros_like(alive))
    depth = torch.zeros(c, dtype=torch.long, device=x.device)
    for j in range(max_tree_depth):
        if not bool(alive.any()):
            break
        forward = uniform(c, h0, generator) < 0.5  # (C,) direction of this doubling
        eps = torch.where(forward[:, None], h, -h)  # (C, 1)
        leaf = _select(forward, trajectory.right, trajectory.left)
        subtree, tally = _build_subtree(leaf, state, j, eps, h0, alive, tally, logdensity_fn, m_inv,
                                        generator, max_delta_energy)
        trajectory = _extend(trajectory, subtree, forward, alive, generator)
        depth += alive
        turned = _is_turning(trajectory.left.momentum, trajectory.right.momentum, trajectory.r_sum, m_inv)
        alive &= ~subtree.stopped & ~turned

    info = NUTSInfo(
        acceptance_rate=tally.sum_accept / tally.num_steps.clamp(min=1),
        is_divergent=tally.divergent,
        tree_depth=depth,
        energy=h0 + trajectory.proposal_delta,
        num_grad_evals=tally.num_steps,
    )
    return trajectory.proposal, info
