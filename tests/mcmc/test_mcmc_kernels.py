"""Kernels recover known moments; contracts of init/step; determinism; divergences.

Statistical tolerance (used throughout): a Monte Carlo estimate of E[f] from correlated
draws has standard error sd(f) / sqrt(ESS_f) (central limit theorem for Markov chains), so
|estimate - truth| < 5 * sd(f) / sqrt(ESS_f) fails for a correct sampler with probability
about 6e-7 per check (far below 1e-4 over all checks here). ESS_f is estimated from the
same draws (ArviZ's "mean" ESS of f, split chains), and each test also asserts a minimum
ESS and R-hat < 1.05, so the tolerance is tight enough to catch a wrong kernel (a missing
Metropolis correction, a wrong momentum variance or a biased NUTS proposal moves the
estimates by many standard errors at these sample sizes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stablegen import mcmc
from stablegen.mcmc import hmc, mala, nuts, rwmh
from stablegen.mcmc.nuts import _checkpoint_range

torch.set_num_threads(1)

# (chains, warmup, samples) per target and kernel: ESS >= 150 per dimension, kept small;
# checked to pass on six seeds each, then one seed fixed
SIZES = {
    "gaussian": {"rwmh": (16, 500, 3000), "mala": (16, 300, 1000), "hmc": (8, 150, 150),
                 "nuts": (8, 150, 150)},
    "banana": {"rwmh": (16, 500, 6000), "mala": (32, 1000, 3000), "hmc": (8, 150, 300),
               "nuts": (16, 150, 300)},
}


def check_moments(draws: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, min_ess: float) -> None:
    """Assert mean and variance within 5 Monte Carlo standard errors (module docstring)."""
    x = draws.double()
    assert np.all(mcmc.rhat(x) < 1.05), mcmc.rhat(x)
    ess_mean = mcmc.ess_mean(x)
    assert np.all(ess_mean > min_ess), ess_mean
    flat = x.reshape(-1, x.shape[-1])
    sd = var.sqrt().numpy()
    err = (flat.mean(0) - mean).abs().numpy()
    assert np.all(err < 5 * sd / np.sqrt(ess_mean)), (err, sd / np.sqrt(ess_mean))
    sq = (x - mean) ** 2  # E[(x - mu)^2] = var; its sd is estimated from the draws
    ess_sq = mcmc.ess_mean(sq)
    sq_sd = sq.reshape(-1, x.shape[-1]).std(0).numpy()
    err_var = (sq.reshape(-1, x.shape[-1]).mean(0) - var).abs().numpy()
    assert np.all(err_var < 5 * sq_sd / np.sqrt(ess_sq)), (err_var, sq_sd / np.sqrt(ess_sq))


@pytest.mark.parametrize("kernel", mcmc.KERNELS)
def test_gaussian_moments(kernel):
    """A rotated 4-d Gaussian with condition number 10 (the benchmark's target, smaller)."""
    target = mcmc.targets.gaussian(4, condition_number=10.0)
    c, w, s = SIZES["gaussian"][kernel]
    g = torch.Generator().manual_seed(1)
    draws, info = mcmc.sample(kernel, target.logdensity_fn, target.initial_positions(c, g), w, s, g)
    assert draws.shape == (c, s, 4) and draws.dtype == torch.float64
    check_moments(draws, target.mean, target.std**2, min_ess=150)
    assert int(info.num_divergent.sum()) == 0


@pytest.mark.parametrize("kernel", mcmc.KERNELS)
def test_banana_moments(kernel):
    """Haario's banana with curvature 0.01: E = 0, var = (100, 3), x2 skewed.

    The benchmark's curvature 0.03 is too hard for a seconds-long test: in its tails a step
    size tuned in the bulk is unstable, so HMC and NUTS chains that wander there diverge and
    stick (NumPyro's NUTS does the same), and MALA, not geometrically ergodic on tails
    lighter than Gaussian (Roberts & Tweedie 1996), mixes too slowly. Even at 0.01, HMC and
    NUTS aim at a higher acceptance (smaller steps) so that no chain sticks in the tails:
    NUTS's acceptance statistic averages over the whole trajectory, so it needs the higher one.
    """
    target = mcmc.targets.banana(2, curvature=0.01)
    c, w, s = SIZES["banana"][kernel]
    g = torch.Generator().manual_seed(2)
    accept = {"hmc": 0.9, "nuts": 0.95}.get(kernel)
    draws, _ = mcmc.sample(kernel, target.logdensity_fn, target.initial_positions(c, g), w, s, g,
                           target_acceptance=accept)
    check_moments(draws, target.mean, target.std**2, min_ess=150)


def test_moment_check_catches_a_wrong_variance():
    """The tolerance is not vacuous: iid draws with a 20 % too large sd fail it."""
    g = torch.Generator().manual_seed(0)
    mean, var = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    good = torch.randn(8, 300, 2, generator=g, dtype=torch.float64)
    check_moments(good, mean, var, min_ess=150)
    with pytest.raises(AssertionError):
        check_moments(1.2 * good, mean, var, min_ess=150)


def correlated_gaussian(c: int, d: int = 3):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    precision = a @ a.T + d * torch.eye(d, dtype=torch.float64)
    return lambda x: -0.5 * ((x @ precision) * x).sum(-1)


@pytest.mark.parametrize("kernel", ["rwmh", "mala", "hmc", "nuts"])
def test_step_contract_and_determinism(kernel):
    c, d = 5, 3
    fn = correlated_gaussian(c, d)
    module = {"rwmh": rwmh, "mala": mala, "hmc": hmc, "nuts": nuts}[kernel]
    extra = (4,) if kernel == "hmc" else ()

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        state = module.init(torch.randn(c, d, generator=g, dtype=torch.float64), fn)
        h = torch.full((c,), 0.3, dtype=torch.float64)  # per-chain step sizes
        for _ in range(3):
            state, info = module.step(state, fn, h, torch.ones(d, dtype=torch.float64), *extra, g)
        return state, info

    state, info = run(0)
    assert state.position.shape == (c, d) and state.logdensity.shape == (c,)
    torch.testing.assert_close(state.logdensity, fn(state.position))
    if kernel != "rwmh":
        assert state.logdensity_grad.shape == (c, d)
    assert info.acceptance_rate.shape == (c,) and info.is_divergent.shape == (c,)
    assert ((info.acceptance_rate >= 0) & (info.acceptance_rate <= 1)).all()
    assert info.num_grad_evals.shape == (c,)
    again, _ = run(0)
    torch.testing.assert_close(again.position, state.position, rtol=0, atol=0)
    other, _ = run(1)
    assert not torch.equal(other.position, state.position)


def test_divergences_in_warmup_raise_every_chains_target():
    """The funnel's neck makes HMC diverge in warmup: once the slow windows see it, every
    chain's target becomes 0.99 (the quiet chains' too); divergence_target_acceptance=None keeps
    the kernel's 0.65."""
    target = mcmc.make_target("funnel", 4)
    for switch, expected in ((0.99, 0.99), (None, hmc.TARGET_ACCEPTANCE)):
        g = torch.Generator().manual_seed(0)
        _, info = mcmc.sample("hmc", target.logdensity_fn, target.initial_positions(4, g), 300, 5, g,
                              num_integration_steps=8, divergence_target_acceptance=switch)
        assert (info.target_acceptance == expected).all(), info.target_acceptance


def test_float32_and_single_chain():
    target = mcmc.make_target("banana", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    x0 = target.initial_positions(1, g, dtype=torch.float32)
    draws, info = mcmc.sample("nuts", target.logdensity_fn, x0, 30, 20, g)
    assert draws.dtype == torch.float32 and draws.shape == (1, 20, 2)
    assert torch.isfinite(draws).all() and info.step_size.shape == (1,)


def test_hmc_divergence_is_flagged_and_rejected():
    """A huge step on a stiff Gaussian blows up the energy: divergent, state unchanged."""
    fn = lambda x: -0.5 * 1e4 * (x**2).sum(-1)
    g = torch.Generator().manual_seed(0)
    state = hmc.init(torch.full((3, 2), 0.01, dtype=torch.float64), fn)
    new, info = hmc.step(state, fn, 1.0, None, 10, g)
    assert info.is_divergent.all() and not info.is_accepted.any()
    torch.testing.assert_close(new.position, state.position)
    new, info = nuts.step(state, fn, 1.0, None, g)
    assert info.is_divergent.all()
    torch.testing.assert_close(new.position, state.position)


def test_zero_density_region_is_never_entered():
    """Half-normal on x > 0 written with -inf outside: no draw may leave the support."""
    fn = lambda x: torch.where(x[:, 0] > 0, -0.5 * x[:, 0] ** 2, -torch.inf)
    for kernel in mcmc.KERNELS:
        g = torch.Generator().manual_seed(0)
        draws, _ = mcmc.sample(kernel, fn, torch.full((4, 1), 0.5, dtype=torch.float64), 50, 50, g)
        assert (draws > 0).all(), kernel


def test_nuts_tree_depth_cap_and_cost():
    fn = lambda x: -0.5 * (x**2).sum(-1)
    g = torch.Generator().manual_seed(0)
    state = nuts.init(torch.zeros(6, 2, dtype=torch.float64), fn)
    _, info = nuts.step(state, fn, 1e-3, None, g, max_tree_depth=4)  # tiny step: never turns
    assert (info.tree_depth == 4).all()
    assert (info.num_grad_evals == 2**4 - 1).all()


def test_nuts_checkpoint_indices_match_numpyro():
    # NumPyro's _leaf_idx_to_ckpt_idxs: idx_max = popcount(n >> 1), idx_min = idx_max - trailing ones + 1
    assert _checkpoint_range(0) == (1, 0)  # even leaf: no check
    assert _checkpoint_range(1) == (0, 0)
    assert _checkpoint_range(3) == (0, 1)
    assert _checkpoint_range(5) == (1, 1)
    assert _checkpoint_range(6) == (3, 2)
    assert _checkpoint_range(7) == (0, 2)
    assert _checkpoint_range(13) == (2, 2)


def test_wrong_logdensity_shape_fails_loudly():
    with pytest.raises(ValueError, match="log-densities"):
        mala.init(torch.zeros(3, 2), lambda x: x.sum())


def test_unknown_kernel():
    with pytest.raises(ValueError, match="unknown kernel 'slice'"):
        mcmc.sample("slice", correlated_gaussian(2), torch.zeros(2, 3), 0, 1, torch.Generator())
