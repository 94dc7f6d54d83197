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
                    before: list[Tensor | None]) -> None:
    """Call right after `optimizer.step()` with `params_before_step`'s copies. A step that left a
    parameter where it was (a GradScaler skipping an overflow) leaves it and its last update be."""
    for p, b in zip(params, before):
        if b is None:
            continue
        update = b - p  # u_t: what the inner optimizer just did
        state = optimizer.state[p]
        prev = state.get("optimism_prev")
        if prev is None:
            state["optimism_prev"] = update
            continue
        moved = (update != 0).any()  # a tensor: no host sync
        p.sub_(torch.where(moved, update - prev, torch.zeros_like(update)))
        state["optimism_prev"] = torch.where(moved, update, prev)
