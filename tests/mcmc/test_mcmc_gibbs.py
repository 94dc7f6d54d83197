"""Gibbs sampling: exact answers on a bivariate Gaussian and on a tiny RBM.

Tolerances: |estimate - truth| < 5 Monte Carlo standard errors (see test_mcmc_kernels.py);
for the Gaussian the standard errors follow from the exact autocorrelation of the scan.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from stablegen import mcmc
from stablegen.mcmc import gibbs

torch.set_num_threads(1)

RHO = 0.8


def gaussian_conditionals(rho: float):
    """x1 | x2 ~ N(rho x2, 1 - rho^2) and x2 | x1 ~ N(rho x1, 1 - rho^2)."""
    sd = math.sqrt(1 - rho**2)

    def x1_given_x2(blocks, g):
        x2 = blocks[1]
        return rho * x2 + sd * torch.randn(x2.shape, generator=g, dtype=x2.dtype)

    def x2_given_x1(blocks, g):
        x1 = blocks[0]
        return rho * x1 + sd * torch.randn(x1.shape, generator=g, dtype=x1.dtype)

    return [x1_given_x2, x2_given_x1]


def test_systematic_scan_bivariate_gaussian():
    """Each coordinate of the systematic scan is AR(1) with coefficient rho^2 (exact)."""
    g = torch.Generator().manual_seed(0)
    c, s = 32, 500
    init = [torch.zeros(c, 1, dtype=torch.float64), torch.zeros(c, 1, dtype=torch.float64)]
    x1, x2 = gibbs.sample(gaussian_conditionals(RHO), init, 50, s, g)
    assert x1.shape == (c, s, 1) and x2.shape == (c, s, 1)
    phi = RHO**2
    n_eff = c * s * (1 - phi) / (1 + phi)  # exact ESS of the mean of an AR(1)
    for x in (x1, x2):
        assert abs(float(x.mean())) < 5 / math.sqrt(n_eff)
        # Var(x^2) = 2 for N(0, 1); x^2 is AR(1) with coefficient phi^2
        n_eff_sq = c * s * (1 - phi**2) / (1 + phi**2)
        assert abs(float((x**2).mean()) - 1) < 5 * math.sqrt(2 / n_eff_sq)
        # the ESS estimator agrees with the exact value within 25 %
        assert abs(float(mcmc.ess_mean(x)[0]) / n_eff - 1) < 0.25
    # lag-1 autocorrelation of x1 equals rho^2: standard error ~ sqrt((1 - phi^2) / (C S))
    a = x1[:, :, 0] - x1.mean()
    lag1 = float((a[:, 1:] * a[:, :-1]).mean() / (a**2).mean())
    assert abs(lag1 - phi) < 5 * math.sqrt((1 - phi**2) / (c * s))
    corr = float((x1 * x2).mean())
    assert abs(corr - RHO) < 0.05


def test_random_scan_and_determinism():
    init = [torch.zeros(8, 1, dtype=torch.float64), torch.ones(8, 1, dtype=torch.float64)]
    conds = gaussian_conditionals(RHO)
    a = gibbs.sample(conds, init, 10, 20, torch.Generator().manual_seed(3), scan="random")
    b = gibbs.sample(conds, init, 10, 20, torch.Generator().manual_seed(3), scan="random")
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    state, info = gibbs.step(gibbs.init(init), gaussian_conditionals(RHO), torch.Generator().manual_seed(0),
                             scan="random")
    assert sorted(info.order) == [0, 1] and info.acceptance_rate.shape == (8,)


def test_rbm_marginal_matches_enumeration():
    """Block Gibbs on a 3-visible, 2-hidden binary RBM (the way methods/rbm uses the kernel):
    the frequency of every visible configuration matches the exact marginal."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64) * 0.5
    c = torch.randn(2, generator=g, dtype=torch.float64) * 0.5

    def v_given_h(blocks, gen):
        h = blocks[1]
        return torch.bernoulli(torch.sigmoid(h @ w.T + b), generator=gen)

    def h_given_v(blocks, gen):
        v = blocks[0]
        return torch.bernoulli(torch.sigmoid(v @ w + c), generator=gen)

    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)  # (8, 3)
    # log p(v) = b.v + sum_j softplus(c_j + v.W_j)
    logp = states @ b + torch.nn.functional.softplus(states @ w + c).sum(-1)
    exact = torch.softmax(logp, 0)
    chains = 64
    init = [torch.zeros(chains, 3, dtype=torch.float64), torch.zeros(chains, 2, dtype=torch.float64)]
    v, h = gibbs.sample([v_given_h, h_given_v], init, 20, 400, g)
    assert v.shape == (chains, 400, 3) and h.shape == (chains, 400, 2)
    index = (v * torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)).sum(-1).long()  # (C, S)
    for k in range(8):
        indicator = (index == k).double()
        freq = float(indicator.mean())
        ess = float(mcmc.ess_mean(indicator)[0])
        se = math.sqrt(float(exact[k]) * (1 - float(exact[k])) / ess)
        assert abs(freq - float(exact[k])) < 5 * se + 1e-12, (k, freq, float(exact[k]))


def test_conditional_shape_and_count_are_checked():
    init = [torch.zeros(4, 1), torch.zeros(4, 1)]
    with pytest.raises(ValueError, match="conditionals for 2 blocks"):
        gibbs.step(gibbs.init(init), gaussian_conditionals(RHO)[:1], torch.Generator())
    bad = [lambda blocks, g: torch.zeros(4, 2), gaussian_conditionals(RHO)[1]]
    with pytest.raises(ValueError, match="returned shape"):
        gibbs.step(gibbs.init(init), bad, torch.Generator())
    with pytest.raises(ValueError, match="same number of chains"):
        gibbs.init([torch.zeros(4, 1), torch.zeros(3, 1)])
    with pytest.raises(ValueError, match="unknown scan"):
        gibbs.step(gibbs.init(init), gaussian_conditionals(RHO), torch.Generator(), scan="sideways")
