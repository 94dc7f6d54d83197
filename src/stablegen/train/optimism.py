"""Optimistic updates (Daskalakis et al. 2018, "Training GANs with Optimism", ICLR: Optimistic
Adam; Gidel et al. 2019 call it extrapolation from the past).

Simultaneous gradient play in a min-max game rotates around the equilibrium, and momentum
makes the rotation wider. The optimistic step subtracts the change of the update since the last
step: with u_t the inner optimizer's update (theta_t - u_t is its plain step),

    theta_{t+1} = theta_t - 2 u_t + u_{t-1},

which for Adam is Optimistic Adam (u_t = lr m_t / (sqrt(v_t) + eps)) and for SGD optimistic
gradient descent, which converges on the bilinear games where plain simultaneous steps diverge.
The last update lives in the inner optimizer's per-parameter state (`optimism_prev`), so
checkpoints, the guard's snapshots and `--resume` carry it.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def params_before_step(params: list[torch.nn.Parameter]) -> list[Tensor | None]:
    """Copies of the parameters the coming `optimizer.step()` will move (those with a gradient)."""
    return [p.detach().clone() if p.grad is not None else None for p in params]


@torch.no_grad()
def optimistic_step(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                    before: list[Tensor | None], may_skip: bool = False) -> None:
    """Call right after `optimizer.step()` with `params_before_step`'s copies. `may_skip`: the
    step may have left the weights where they were (a GradScaler skipping an overflow); such a
    parameter is left, and its last update kept, instead of being moved back by u_{t-1}."""
    stepped = [(p, b) for p, b in zip(params, before) if b is not None]
    if not stepped:
        return
    ps, bs = (list(t) for t in zip(*stepped))
    ongoing = []
    for p, u in zip(ps, torch._foreach_sub(bs, ps)):  # u_t: what the inner optimizer just did
        st = optimizer.state[p]
        if "optimism_prev" in st:
            ongoing.append((p, u, st))
        elif not may_skip or bool((u != 0).any()):  # a first step: plain (a skipped one is no update)
            st["optimism_prev"] = u
    if not ongoing:
        return
    ps, updates, states = (list(t) for t in zip(*ongoing))
    prevs = [st["optimism_prev"] for st in states]
    if may_skip:  # per parameter, without a host sync
        moved = [(u != 0).any() for u in updates]
        updates = [torch.where(m, u, v) for m, u, v in zip(moved, updates, prevs)]
    torch._foreach_sub_(ps, torch._foreach_sub(updates, prevs))  # theta_t - u_t - (u_t - u_{t-1})
    for st, u in zip(states, updates):
        st["optimism_prev"] = u
