"""DPM-Solver++(2M) (Lu et al. 2022) against its update equations computed by hand, DDIM's
first-order step, and the exact denoiser of a Gaussian. (diffusers is not installed here, so
the reference is the paper's Algorithm 2 written out below.)"""

from __future__ import annotations

import math

import pytest
import torch

from stablegen.methods.diffusion_samplers import Denoised, ddim_sample, dpmpp2m_sample, timestep_table
from stablegen.methods.diffusion_schedules import alphas_cumprod, beta_schedule, eps_from_x0

ABAR = alphas_cumprod(beta_schedule("linear", 1000))


def linear_model(x_t, t, a):
    """A fixed model output: x0_hat = 0.5 x_t + 0.1 at every step."""
    x0 = 0.5 * x_t + 0.1
    return Denoised(x0, eps_from_x0(x_t, x0, a))


def test_matches_the_update_equations_by_hand():
    """Table 999 -> 500 -> 0 -> clean data. alpha = sqrt(abar), sigma = sqrt(1 - abar),
    lambda = ln(alpha / sigma). Step 1 (first order): x1 = sigma_1/sigma_0 x0 - alpha_1 (e^-h1 - 1) D0;
    step 2: D = (1 + 1/(2r)) D1 - 1/(2r) D0 with r = h1 / h2; last step to sigma = 0: x = D2."""
    abar = [ABAR[t].item() for t in (999, 500, 0)]
    alpha = [math.sqrt(a) for a in abar]
    sigma = [math.sqrt(1 - a) for a in abar]
    lam = [math.log(al / si) for al, si in zip(alpha, sigma)]
    x = 1.0
    d0 = 0.5 * x + 0.1
    h1 = lam[1] - lam[0]
    x = sigma[1] / sigma[0] * x - alpha[1] * (math.exp(-h1) - 1) * d0
    d1 = 0.5 * x + 0.1
    h2 = lam[2] - lam[1]
    r = h1 / h2
    d = (1 + 1 / (2 * r)) * d1 - 1 / (2 * r) * d0
    x = sigma[2] / sigma[1] * x - alpha[2] * (math.exp(-h2) - 1) * d
    expected = 0.5 * x + 0.1
    out = dpmpp2m_sample(linear_model, torch.ones(1, 1, dtype=torch.float64), ABAR,
                         timestep_table(1000, 3, "linspace"))
    assert out.nfe == 3
    assert out.x.item() == pytest.approx(expected, rel=1e-9)


def test_first_order_step_is_ddim():
    """DPM-Solver++'s first-order update is DDIM's (eta 0): on a two-entry table (one step, then
    the step to clean data) the two samplers agree."""
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    table = torch.tensor([999, 400])
    a = dpmpp2m_sample(linear_model, z, ABAR, table).x
    b = ddim_sample(linear_model, z, ABAR, table, None, eta=0.0).x
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


MU, S = 0.5, 0.3


def oracle(x_t, t, a):
    """The exact denoiser of N(MU, S^2) data."""
    r = a.reshape(-1, 1).to(x_t.dtype)
    x0 = MU + r.sqrt() * S**2 * (x_t - r.sqrt() * MU) / (r * S**2 + 1 - r)
    return Denoised(x0, eps_from_x0(x_t, x0, a))


def test_second_order_convergence_with_the_exact_denoiser():
    """For Gaussian data the probability-flow ODE keeps (x_t - sqrt(abar_t) MU) / sqrt(abar_t S^2 +
    1 - abar_t) constant, so its solution at the table's last entry (then x0_hat there, as the
    samplers end) is known exactly. On tables from 999 to 99, 2M's error falls ~4.5x per doubling
    of the steps (measured 0.0039, 0.00088, 0.00019 at 10, 20, 40) and DDIM's 2x (0.0114, 0.0056,
    0.0028). Asserted: ratios in (3.5, 6) and (1.7, 2.3), and 2M under DDIM/5 at 20 steps."""
    z = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def errors(n: int) -> tuple[float, float]:
        table = torch.linspace(999, 99, n, dtype=torch.float64).round().long()
        a_T, a_l = ABAR[999].item(), ABAR[99].item()
        x_l = a_l**0.5 * MU + (a_l * S**2 + 1 - a_l) ** 0.5 * (z - a_T**0.5 * MU) / (a_T * S**2 + 1 - a_T) ** 0.5
        exact = oracle(x_l, None, torch.full((len(z),), a_l, dtype=torch.float64)).x0
        return ((dpmpp2m_sample(oracle, z, ABAR, table).x - exact).abs().mean().item(),
                (ddim_sample(oracle, z, ABAR, table, None).x - exact).abs().mean().item())

    (m10, d10), (m20, d20), (m40, d40) = errors(10), errors(20), errors(40)
    assert 3.5 < m10 / m20 < 6 and 3.5 < m20 / m40 < 6
    assert 1.7 < d10 / d20 < 2.3 and 1.7 < d20 / d40 < 2.3
    assert m20 * 5 < d20
