"""Samplers: timestep tables, determinism, DDIM/DDPM identities, and an exact Gaussian oracle."""

from __future__ import annotations

import pytest
import torch

from stablegen.methods.diffusion_samplers import (Denoised, ddim_sample, ddpm_sample, heun_sample, karras_sigmas,
                                                  sigma_to_t, step_pairs, timestep_table)
from stablegen.methods.diffusion_schedules import alphas_cumprod, beta_schedule, eps_from_x0, expand

ABAR = alphas_cumprod(beta_schedule("linear", 1000))
MU, S = 0.5, 0.3  # 1-D Gaussian data N(MU, S^2)


def oracle(x_t: torch.Tensor, t: torch.Tensor, a: torch.Tensor) -> Denoised:
    """The exact denoiser of N(MU, S^2) data: E[x0 | x_t] in closed form."""
    r = expand(a, x_t)
    x0 = MU + r.sqrt() * S**2 * (x_t - r.sqrt() * MU) / (r * S**2 + 1 - r)
    return Denoised(x0, eps_from_x0(x_t, x0, a))


def test_timestep_tables():
    assert timestep_table(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert timestep_table(1000, 3, "trailing").tolist() == [999, 666, 332]
    assert timestep_table(1000, 4, "linspace").tolist() == [999, 666, 333, 0]
    assert timestep_table(10, 10, "trailing").tolist() == list(range(9, -1, -1))
    for spacing in ("leading", "trailing", "linspace"):  # all steps: every timestep once
        assert timestep_table(1000, 1000, spacing).tolist() == list(range(999, -1, -1))
    with pytest.raises(ValueError, match="1..1000"):
        timestep_table(1000, 1001)
    with pytest.raises(ValueError, match="leading, trailing or linspace"):
        timestep_table(1000, 10, "uniform")  # type: ignore[arg-type]


def test_previous_timestep_comes_from_the_table():
    # trailing with N = 3 (3 does not divide 1000): 666 -> 332, where t - T // N gives 333;
    # linspace N = 4: 999 -> 666, where t - T // N gives 749. The last step goes to clean data.
    pairs = step_pairs(ABAR, timestep_table(1000, 3, "trailing"))
    assert [(t, a, p) for t, a, p in pairs] == [
        (999, ABAR[999].item(), ABAR[666].item()), (666, ABAR[666].item(), ABAR[332].item()),
        (332, ABAR[332].item(), 1.0)]
    pairs = step_pairs(ABAR, timestep_table(1000, 4, "linspace"))
    assert [p for _, _, p in pairs] == [ABAR[666].item(), ABAR[333].item(), ABAR[0].item(), 1.0]


def test_samplers_query_the_table_timesteps():
    seen = []

    def spy(x_t, t, a):
        seen.append(int(t[0]))
        assert torch.all(a == ABAR[t.long()])
        return oracle(x_t, t, a)

    table = timestep_table(1000, 7, "linspace")
    ddim_sample(spy, torch.zeros(2, 1), ABAR, table, None)
    assert seen == table.tolist()


def test_ddim_eta_zero_is_deterministic_given_the_noise():
    z = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    table = timestep_table(1000, 20)
    a = ddim_sample(oracle, z, ABAR, table, torch.Generator().manual_seed(1), eta=0.0).x
    b = ddim_sample(oracle, z, ABAR, table, torch.Generator().manual_seed(2), eta=0.0).x
    c = ddim_sample(oracle, z, ABAR, table, torch.Generator().manual_seed(2), eta=1.0).x
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # eta = 1 does use the generator


def test_ddim_eta_one_equals_ddpm_fixed_small():
    # Song et al. 2021, sec. 4.1: eta = 1 makes the DDIM step the DDPM posterior step on the
    # same (respaced) table; both draw one normal per non-final step, so the draws coincide.
    z = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    table = timestep_table(1000, 25, "linspace")
    a = ddim_sample(oracle, z, ABAR, table, torch.Generator().manual_seed(3), eta=1.0).x
    b = ddpm_sample(oracle, z, ABAR, table, torch.Generator().manual_seed(3), "fixed_small").x
    assert torch.allclose(a, b, atol=1e-4)  # float32 rounding of two algebraically equal updates


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm_large", "ddim", "heun"])
def test_samplers_recover_a_gaussian_with_the_exact_denoiser(sampler):
    # 4,000 samples: the standard error of the mean is S/63 = 0.005 and of the std
    # S/sqrt(2n) = 0.0034; tolerances are 0.02 (4 se) and 0.015 (4.4 se). The sampler
    # settings are fine enough for their discretization bias to be < 0.005 (DDPM and
    # DDIM with all 1000 steps; Heun with 100 levels), so a wrong formula fails.
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 1, generator=g)
    full = timestep_table(1000, 1000)
    if sampler == "ddpm":
        out = ddpm_sample(oracle, z, ABAR, full, g, "fixed_small")
    elif sampler == "ddpm_large":
        out = ddpm_sample(oracle, z, ABAR, full, g, "fixed_large")
    elif sampler == "ddim":
        out = ddim_sample(oracle, z, ABAR, full, g, eta=0.0)
    else:
        out = heun_sample(oracle, z, ABAR, 100)
    assert out.x.mean().item() == pytest.approx(MU, abs=0.02)
    assert out.x.std().item() == pytest.approx(S, abs=0.015)


def test_ddpm_learned_variance_uses_the_interpolation():
    # var_frac = 0 is beta~ (fixed-small), var_frac = 1 is beta (fixed-large).
    def with_frac(frac):
        return lambda x, t, a: oracle(x, t, a)._replace(var_frac=torch.full_like(x, frac))

    z = torch.randn(16, 1, generator=torch.Generator().manual_seed(0))
    table = timestep_table(1000, 10)
    for frac, fixed in ((0.0, "fixed_small"), (1.0, "fixed_large")):
        a = ddpm_sample(with_frac(frac), z, ABAR, table, torch.Generator().manual_seed(1), "learned").x
        b = ddpm_sample(oracle, z, ABAR, table, torch.Generator().manual_seed(1), fixed).x
        assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="learned variance"):
        ddpm_sample(oracle, z, ABAR, table, None, "learned")


def test_karras_sigmas_and_sigma_to_t():
    sig = karras_sigmas(0.01, 80.0, 18)
    assert sig.shape == (19,) and sig[-1] == 0
    assert sig[0].item() == pytest.approx(80.0) and sig[-2].item() == pytest.approx(0.01)
    assert (sig.diff() < 0).all()
    table_sigma = ((1 - ABAR) / ABAR).sqrt()
    t = torch.tensor([0, 17, 500, 999])
    assert torch.allclose(sigma_to_t(table_sigma[t], ABAR), t.double(), atol=1e-6)
    mid = (table_sigma[10].log() + table_sigma[11].log()).div(2).exp()  # halfway in log sigma
    assert sigma_to_t(mid[None], ABAR).item() == pytest.approx(10.5, abs=1e-6)


def test_heun_counts_evaluations_and_is_deterministic():
    z = torch.randn(8, 1, generator=torch.Generator().manual_seed(0))
    a, b = heun_sample(oracle, z, ABAR, 10), heun_sample(oracle, z, ABAR, 10)
    assert a.nfe == 19 and torch.equal(a.x, b.x)  # Heun: 2N - 1 (Euler on the last step)
    assert heun_sample(oracle, z, ABAR, 10, order=1).nfe == 10
