"""EDM (Karras et al. 2022): Table 1's formulas, the rho schedule, Algorithms 1 and 2 on a
Gaussian whose exact denoiser is known, and the method built on the usual nets."""

from __future__ import annotations

import math

import pytest
import torch

from stablegen.base import Batch, DataInfo
from stablegen.methods.diffusion import EDM_TIME_SCALE, DiffusionConfig, EDMDiffusion, build
from stablegen.methods.diffusion_samplers import edm_sample, karras_sigmas
from stablegen.methods.diffusion_schedules import edm_loss_weight, edm_precond, edm_train_sigmas

SD = 0.5  # sigma_data


def exact_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x0 + sigma n] for x0 ~ N(0, SD^2): x SD^2 / (sigma^2 + SD^2)."""
    return x * (SD**2 / (sigma**2 + SD**2)).reshape(-1, 1).to(x.dtype)


@pytest.mark.parametrize("sigma", [0.002, 0.5, 80.0])
def test_preconditioning_and_loss_weight_match_table_1(sigma):
    c_skip, c_out, c_in, c_noise = edm_precond(torch.tensor([sigma], dtype=torch.float64), SD)
    assert c_skip.item() == pytest.approx(SD**2 / (sigma**2 + SD**2))
    assert c_out.item() == pytest.approx(sigma * SD / math.sqrt(sigma**2 + SD**2))
    assert c_in.item() == pytest.approx(1 / math.sqrt(sigma**2 + SD**2))
    assert c_noise.item() == pytest.approx(math.log(sigma) / 4)
    weight = edm_loss_weight(torch.tensor([sigma], dtype=torch.float64), SD).item()
    assert weight == pytest.approx((sigma**2 + SD**2) / (sigma * SD) ** 2)
    assert weight * c_out.item() ** 2 == pytest.approx(1.0)  # the net's own target has unit weight


def test_preconditioning_check_values():
    """At sigma = sigma_data = 0.5: c_skip 1/2, c_out = c_in^-1 / 2 = 0.35355, c_in 1.41421,
    lambda 8; at sigma = 80: c_skip 3.906e-5, c_out 0.49999."""
    c_skip, c_out, c_in, c_noise = (c.item() for c in edm_precond(torch.tensor([0.5]), 0.5))
    assert (c_skip, c_out, c_in) == pytest.approx((0.5, 0.3535534, 1.4142136))
    assert c_noise == pytest.approx(-0.1732868)
    assert edm_loss_weight(torch.tensor([0.5]), 0.5).item() == pytest.approx(8.0)
    c_skip, c_out, _, _ = (c.item() for c in edm_precond(torch.tensor([80.0], dtype=torch.float64), 0.5))
    assert c_skip == pytest.approx(3.9060e-5, rel=1e-4) and c_out == pytest.approx(0.4999902, rel=1e-6)


def test_training_sigmas_are_log_normal():
    """ln(sigma) ~ N(-1.2, 1.2^2): 100,000 draws; standard errors 0.004 (mean) and 0.003 (std),
    tolerance 0.02."""
    s = edm_train_sigmas(100_000, -1.2, 1.2, generator=torch.Generator().manual_seed(0))
    assert s.log().mean().item() == pytest.approx(-1.2, abs=0.02)
    assert s.log().std().item() == pytest.approx(1.2, abs=0.02)


def test_rho_schedule_endpoints_and_monotonicity():
    sig = karras_sigmas(0.002, 80.0, 18, rho=7.0)
    assert sig.shape == (19,) and sig[-1] == 0
    assert sig[0].item() == pytest.approx(80.0) and sig[-2].item() == pytest.approx(0.002)
    assert (sig.diff() < 0).all()
    hi, lo = 80.0 ** (1 / 7), 0.002 ** (1 / 7)
    assert sig[1].item() == pytest.approx((hi + (lo - hi) / 17) ** 7)  # eq. 5 at i = 1: 57.586
    assert sig[1].item() == pytest.approx(57.5865, abs=1e-3)


@pytest.mark.parametrize("order, steps, s_churn", [(2, 64, 0.0), (2, 128, 160.0), (1, 512, 0.0)])
def test_sampler_recovers_the_gaussian_with_the_exact_denoiser(order, steps, s_churn):
    """4,000 samples of N(0, SD^2): standard error of the std SD / sqrt(2n) = 0.0056; tolerance
    0.025 (4.5 se). The step counts keep the discretization bias of the std under 1 % (measured
    on 200,000 draws: Heun-64 +0.4 %, Heun-128 with maximal churn +0.9 %, Euler-512 -0.6 %)."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(4000, 1, generator=g)
    out = edm_sample(exact_denoiser, noise, karras_sigmas(0.002, 80.0, steps), g, order, s_churn,
                     s_tmin=0.05, s_tmax=50.0)
    assert out.nfe == (2 * steps - 1 if order == 2 else steps)
    assert out.x.mean().item() == pytest.approx(0.0, abs=0.03)
    assert out.x.std().item() == pytest.approx(SD, abs=0.025)


def test_heun_is_second_order_and_euler_first():
    """For Gaussian data the probability-flow ODE is linear, x(sigma) = x(80) sqrt(sigma^2 + SD^2)
    / sqrt(80^2 + SD^2), and each sampler's output is a constant multiple of the noise; its
    relative error shrinks 4x per doubling of the levels for Heun (measured 18: 5.5 %, 32: 1.6 %,
    64: 0.4 %) and 2x for Euler. Asserted: ratios in (3, 5) and (1.6, 2.4)."""
    noise = torch.ones(1, 1, dtype=torch.float64)
    exact = 80.0 * SD / math.sqrt(80.0**2 + SD**2)

    def error(steps: int, order: int) -> float:
        return abs(edm_sample(exact_denoiser, noise, karras_sigmas(0.002, 80.0, steps), None, order).x.item()
                   / exact - 1)

    assert error(18, 2) == pytest.approx(0.055, abs=0.002)
    assert 3 < error(32, 2) / error(64, 2) < 5
    assert 1.6 < error(256, 1) / error(512, 1) < 2.4


def test_churn_uses_the_generator_and_no_churn_is_deterministic():
    noise = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    sig = karras_sigmas(0.002, 80.0, 10)
    a = edm_sample(exact_denoiser, noise, sig, torch.Generator().manual_seed(1)).x
    b = edm_sample(exact_denoiser, noise, sig, torch.Generator().manual_seed(2)).x
    assert torch.equal(a, b)  # s_churn = 0: Algorithm 1, the generator is never used
    c = edm_sample(exact_denoiser, noise, sig, torch.Generator().manual_seed(1), s_churn=10.0).x
    d = edm_sample(exact_denoiser, noise, sig, torch.Generator().manual_seed(2), s_churn=10.0).x
    assert not torch.allclose(c, d)
    # outside [s_tmin, s_tmax] there is no churn: a window above sigma_max is Algorithm 1 again
    e = edm_sample(exact_denoiser, noise, sig, torch.Generator().manual_seed(1), s_churn=10.0, s_tmin=100.0).x
    assert torch.equal(a, e)


class ZeroNet(torch.nn.Module):
    """F = 0: for N(0, SD^2) data the exact D(x; sigma) is c_skip x, so F* = 0."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.seen_t: list[torch.Tensor] = []

    def forward(self, x, t, y=None):
        self.seen_t.append(t)
        return x * self.p


def test_edm_method_samples_the_gaussian_with_the_optimal_net_and_feeds_scaled_c_noise():
    info = DataInfo("gauss", "vector", (1,))
    net = ZeroNet()
    m = build(DiffusionConfig(parameterization="edm", sampler="heun", steps=32), info, {"denoiser": net})
    assert isinstance(m, EDMDiffusion)
    x = m.sample(4000, generator=torch.Generator().manual_seed(0))
    assert x.std().item() == pytest.approx(SD, abs=0.025)
    first = net.seen_t[0]
    assert first[0].item() == pytest.approx(EDM_TIME_SCALE * math.log(80.0) / 4, rel=1e-5)  # 273.9
    # the loss at the optimum is lambda(sigma) E|c_skip x - x0|^2 = lambda c_out^2 = 1 per sample
    torch.manual_seed(0)
    loss, logs = m.loss(Batch(SD * torch.randn(20_000, 1)), 0)
    assert loss.shape == (20_000,) and loss.mean().item() == pytest.approx(1.0, abs=0.05)


def test_edm_trains_the_mlp_denoiser_and_refuses_ddpm_options():
    info = DataInfo("ring8", "vector", (2,))
    torch.manual_seed(0)
    m = build(DiffusionConfig(parameterization="edm", sampler="heun", steps=4, mlp={"width": 16, "depth": 1}), info)
    loss, _ = m.loss(Batch(torch.randn(8, 2)), 0)
    loss.mean().backward()
    assert all(p.grad is not None for p in m.net.parameters())
    assert m.sample(5, generator=torch.Generator().manual_seed(0), s_churn=1.0).shape == (5, 2)
    with pytest.raises(ValueError, match="sampler ddim belong"):
        DiffusionConfig(parameterization="edm")  # the default sampler ddim is a DDPM sampler
    with pytest.raises(ValueError, match="prediction 'v'"):
        DiffusionConfig(parameterization="edm", sampler="heun", prediction="v")
    with pytest.raises(ValueError, match="choose heun or euler"):
        m.sample(2, sampler="ddim")
    with pytest.raises(TypeError, match=r"no options \['eta'\]"):
        m.sample(2, eta=0.0)


def test_edm_ring8_recipe_builds_round_trips_and_exports():
    """The contract of tests/test_contract.py (which runs one recipe per family, ddpm's) for the
    edm recipe: finite loss, a gradient for every parameter, save/load, and a traceable export."""
    from stablegen.api import build_method, seed_everything
    from stablegen.data import InfiniteLoader, load_dataset
    from stablegen.export import trace
    from stablegen.recipe import load_recipe

    recipe = load_recipe("edm-ring8", {"data.n": 256, "data.batch_size": 8, "model.mlp.width": 16})
    seed_everything(0, True)
    data = load_dataset(recipe.data)
    m = build_method(recipe, data)
    assert isinstance(m, EDMDiffusion)
    loss, _ = m.phases()[0].loss(InfiniteLoader(data, 8, seed=0).next(), 0)
    assert torch.isfinite(loss).all()
    loss.mean().backward()
    assert all(p.grad is not None for p in m.parameters())
    copy = build_method(recipe, data)
    copy.load_state_dict(m.state_dict())
    a = m.sample(3, generator=torch.Generator().manual_seed(0), steps=4)
    assert a.shape == (3, 2) and torch.equal(a, copy.sample(3, generator=torch.Generator().manual_seed(0), steps=4))
    spec = m.export_net()
    x, t = torch.randn(4, 2), torch.full((4,), 10.0)
    assert torch.allclose(trace(spec).module()(x, t), m.net(x, t), atol=1e-6)
