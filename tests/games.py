"""Small games the optimizer tests play (tests/ is on sys.path through its conftest.py)."""

import torch


def bilinear_game(after_step=None, steps: int = 1000, lr: float = 0.1, optimizer=torch.optim.SGD) -> float:
    """min_x max_y x*y by simultaneous SGD from (1, 1); distance from the equilibrium (0, 0) at the
    end. `after_step(optimizer, param, before)` runs after each player's step, with the player's
    parameter as it was before the step; `optimizer(params, lr=lr)` builds each player's optimizer.
    Plain SGD play spirals out: |(x, y)| grows by sqrt(1 + lr^2) per step (sqrt(2) * 1.005^1000
    ~ 210 with the defaults)."""
    x, y = torch.nn.Parameter(torch.tensor(1.0)), torch.nn.Parameter(torch.tensor(1.0))
    ox, oy = optimizer([x], lr=lr), optimizer([y], lr=lr)
    for _ in range(steps):
        ox.zero_grad(), oy.zero_grad()
        (x * y).backward()
        y.grad.neg_()  # y ascends
        before = x.detach().clone(), y.detach().clone()
        ox.step(), oy.step()
        if after_step is not None:
            after_step(ox, x, before[0]), after_step(oy, y, before[1])
    return float(torch.hypot(x.detach(), y.detach()))
