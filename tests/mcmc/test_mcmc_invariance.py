"""NUTS and HMC leave the banana invariant: chains started at exact, independent draws are
still exact draws after a few transitions with a fixed step size and mass matrix.

With no warmup and independent chains, the draws after the transitions are i.i.d. from the
target if (and only if, up to the power of the check) the kernel is correct, so the plain
i.i.d. standard error applies: |mean - truth| < 5 sd / sqrt(N) fails for a correct kernel
with probability about 6e-7 per check. This isolates the kernel from the adaptation: a bias
in NUTS's multinomial sampling inside a subtree, its progressive sampling between subtrees,
or a U-turn test that stops the tree asymmetrically shows here as a shifted moment of the
banana's curved coordinates, which a symmetric Gaussian can hide.
"""

from __future__ import annotations

import math

import pytest
import torch

from stablegen import mcmc
from stablegen.mcmc import hmc, nuts

torch.set_num_threads(1)

B = 0.03  # the banana's curvature (mcmc.targets.banana)
N = 4000  # chains


def exact_banana(n: int, g: torch.Generator) -> torch.Tensor:
    """n exact draws (n, 2): x1 ~ N(0, 100), x2 = y - b (x1^2 - 100) with y ~ N(0, 1)."""
    x1 = 10.0 * torch.randn(n, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    return torch.stack((x1, y - B * (x1**2 - 100.0)), 1)


def statistics(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-draw functions with known means: x1 (0), x1^2 / 100 (1), y (0), y^2 (1),
    x1 * y (0), x2 (0). y = x2 + b (x1^2 - 100) is the banana's whitened second coordinate."""
    y = x[:, 1] + B * (x[:, 0] ** 2 - 100.0)
    return {"x1": x[:, 0] / 10.0, "x1^2": x[:, 0] ** 2 / 100.0, "y": y, "y^2": y**2,
            "x1*y": x[:, 0] * y / 10.0, "x2": x[:, 1]}


TRUTH = {"x1": 0.0, "x1^2": 1.0, "y": 0.0, "y^2": 1.0, "x1*y": 0.0, "x2": 0.0}


@pytest.mark.parametrize("kernel", ["nuts", "hmc"])
def test_kernel_leaves_the_banana_invariant(kernel):
    target = mcmc.make_target("banana")
    g = torch.Generator().manual_seed(0)
    x = exact_banana(N, g)
    m_inv = torch.tensor([100.0, 19.0], dtype=torch.float64)  # roughly the true variances
    state = (nuts if kernel == "nuts" else hmc).init(x, target.logdensity_fn)
    for _ in range(3):
        if kernel == "nuts":  # a large step: many divergences in the tails, long trees in the bulk
            state, info = nuts.step(state, target.logdensity_fn, 0.3, m_inv, g, max_tree_depth=6)
        else:
            state, info = hmc.step(state, target.logdensity_fn, 0.3, m_inv, 5, g)
    moved = (state.position != x).any(1).double().mean()
    assert moved > 0.5  # the check has power only if the chains moved
    for name, f in statistics(state.position).items():
        se = float(f.std()) / math.sqrt(N)
        assert abs(float(f.mean()) - TRUTH[name]) < 5 * se, (name, float(f.mean()), se)
