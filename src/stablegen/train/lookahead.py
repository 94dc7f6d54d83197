"""Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back"); on both
players of a GAN it is Lookahead-minmax (Chavdarova et al. 2021, "Taming GANs with
Lookahead-Minmax"), which damps the rotation of simultaneous gradient play.

Every k steps of the inner optimizer the slow weights move a fraction alpha toward the fast
ones, phi <- phi + alpha (theta - phi), and the fast weights restart there, theta <- phi. The
slow copy and the step count live in the inner optimizer's per-parameter state (keys
`lookahead_slow`, `lookahead_count`), so checkpoints, the guard's snapshots and `--resume`
carry them with the rest of the optimizer state.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def lookahead_step(optimizer: torch.optim.Optimizer, k: int, alpha: float) -> None:
    """Call right after each `optimizer.step()` that was applied. The slow weights start from
    the weights after the first step."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:  # not stepped: leave its state to the inner optimizer's lazy init
                continue
            state = optimizer.state[p]
            if "lookahead_slow" not in state:
                state["lookahead_slow"] = p.detach().clone()
                state["lookahead_count"] = 0  # a plain int: no host sync; checkpoints keep it in JSON
                continue
            state["lookahead_count"] += 1
            if state["lookahead_count"] % k == 0:
                slow = state["lookahead_slow"]
                slow.add_(p - slow, alpha=alpha)
                p.copy_(slow)
