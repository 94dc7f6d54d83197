"""Blocked Gibbs sampling for models with tractable conditionals.

Geman & Geman 1984, "Stochastic relaxation, Gibbs distributions, and the Bayesian
restoration of images"; Gelfand & Smith 1990, "Sampling-based approaches to calculating
marginal densities". The state is a tuple of blocks, each (C, ...) for C chains; block i is
redrawn from its conditional given the current values of all the others. The conditionals
are the model's business (an RBM passes "v given h" and "h given v"):

    conditionals[i](blocks, generator) -> new value of blocks[i], same shape

A systematic scan updates the blocks in order each sweep; a random scan visits them in a
fresh random order per sweep (shared by all chains). Both leave the joint law invariant.
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple, Sequence

import torch
from torch import Tensor

Conditional = Callable[[tuple[Tensor, ...], torch.Generator], Tensor]
Scan = Literal["systematic", "random"]


class GibbsState(NamedTuple):
    """Current value of every block, each (C, ...)."""

    blocks: tuple[Tensor, ...]


class GibbsInfo(NamedTuple):
    """What one sweep did."""

    order: tuple[int, ...]  # the blocks in the order they were updated
    acceptance_rate: Tensor  # (C,) always 1: a Gibbs update is never rejected


def init(blocks: Sequence[Tensor]) -> GibbsState:
    """State from initial blocks, each (C, ...) with the same number of chains C."""
    blocks = tuple(blocks)
    if not blocks:
        raise ValueError("Gibbs sampling needs at least one block")
    chains = {b.shape[0] for b in blocks}
    if len(chains) != 1:
        raise ValueError(f"all blocks need the same number of chains, got leading sizes {sorted(chains)}")
    return GibbsState(blocks)


def step(
    state: GibbsState,
    conditionals: Sequence[Conditional],
    generator: torch.Generator,
    *,
    scan: Scan = "systematic",
) -> tuple[GibbsState, GibbsInfo]:
    """One sweep: every block redrawn once from its conditional given the rest."""
    blocks = list(state.blocks)
    if len(conditionals) != len(blocks):
        raise ValueError(f"got {len(conditionals)} conditionals for {len(blocks)} blocks")
    if scan == "systematic":
        order = tuple(range(len(blocks)))
    elif scan == "random":
        order = tuple(torch.randperm(len(blocks), generator=generator, device=generator.device).tolist())
    else:
        raise ValueError(f"unknown scan {scan!r}; choose 'systematic' or 'random'")
    for i in order:
        new = conditionals[i](tuple(blocks), generator)
        if new.shape != blocks[i].shape:
            raise ValueError(f"conditional {i} returned shape {tuple(new.shape)}, "
                             f"block {i} has shape {tuple(blocks[i].shape)}")
        blocks[i] = new
    ones = torch.ones(blocks[0].shape[0], device=blocks[0].device)
    return GibbsState(tuple(blocks)), GibbsInfo(order, ones)


def sample(
    conditionals: Sequence[Conditional],
    init_blocks: Sequence[Tensor],
    num_burnin: int,
    num_samples: int,
    generator: torch.Generator,
    *,
    thin: int = 1,
    scan: Scan = "systematic",
) -> tuple[Tensor, ...]:
    """Run `num_burnin` sweeps, then keep every `thin`-th of `num_samples * thin` sweeps.

    Returns one tensor per block, (C, num_samples, ...).
    """
    if num_burnin < 0 or num_samples < 1 or thin < 1:
        raise ValueError(f"need num_burnin >= 0, num_samples >= 1, thin >= 1; "
                         f"got {num_burnin}, {num_samples}, {thin}")
    state = init(init_blocks)
    for _ in range(num_burnin):
        state, _ = step(state, conditionals, generator, scan=scan)
    kept: list[list[Tensor]] = [[] for _ in state.blocks]
    for _ in range(num_samples):
        for _ in range(thin):
            state, _ = step(state, conditionals, generator, scan=scan)
        for store, block in zip(kept, state.blocks):
            store.append(block)
    return tuple(torch.stack(store, dim=1) for store in kept)
