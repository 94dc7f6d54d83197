"""Noise schedules and Gaussian algebra against the standard formulas and fixed check values."""

from __future__ import annotations

import math

import pytest
import torch

from stablegen.methods.diffusion_schedules import (alphas_cumprod, beta_schedule, dynamic_threshold,
                                                   min_snr_weight, posterior_mean, posterior_variance,
                                                   q_sample, rescale_zero_terminal_snr, snr, target,
                                                   to_x0_eps, velocity)

ABAR = alphas_cumprod(beta_schedule("linear", 1000))  # DDPM's linear schedule, T = 1000, 0-indexed


def test_linear_schedule_endpoints():
    betas = beta_schedule("linear", 1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)


def test_ddpm_posterior_variance_check_values():
    # beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t with 0-indexed t (Ho et al. 2020, eq. 7):
    # 0.0097916 at t = 487 and 0.0199999 at t = 999 (the 0.00979 and 0.02).
    assert posterior_variance(ABAR[487], ABAR[486]).item() == pytest.approx(0.00979, abs=5e-6)
    assert posterior_variance(ABAR[999], ABAR[998]).item() == pytest.approx(0.02, abs=1e-5)


def test_ddim_variance_check_value_is_sigma_squared_at_eta_one():
    # The "DDIM variance between t = 420 and t = 400 is 0.14771" is DDIM's sigma^2 at
    # eta = 1 (Song et al. 2021, eq. 16), (1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev),
    # with 0-indexed timesteps: 0.1477195 (the figure truncated to 5 decimals). The other
    # readings do not match: sigma itself is 0.384, 1-indexed steps give 0.14735 or 0.14809.
    sigma2 = posterior_variance(ABAR[420], ABAR[400]).item()
    assert sigma2 == pytest.approx(0.14771, abs=1e-5)
    assert abs(math.sqrt(sigma2) - 0.14771) > 0.1
    assert abs(posterior_variance(ABAR[419], ABAR[399]).item() - 0.14771) > 3e-4
    assert abs(posterior_variance(ABAR[421], ABAR[401]).item() - 0.14771) > 3e-4


def test_cosine_schedule_matches_its_definition():
    T, s = 1000, 0.008
    betas = beta_schedule("cosine", T, cosine_s=s)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    abar = alphas_cumprod(betas)
    for t in (0, 10, 500, 900):  # abar_t = f(t + 1) / f(0) with the 0-indexed step t
        assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert betas.max().item() == pytest.approx(0.999)  # the last beta hits the cap
    assert (betas <= 0.999).all()


def test_scaled_linear_is_linear_in_sqrt_beta():
    betas = beta_schedule("scaled_linear", 100, beta_start=0.00085, beta_end=0.012)
    root = betas.sqrt()
    assert torch.allclose(root.diff(), root.diff()[0].expand(99), atol=1e-12)
    assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)


def test_unknown_schedule_fails_loudly():
    with pytest.raises(ValueError, match="linear, scaled_linear or cosine"):
        beta_schedule("quadratic", 10)  # type: ignore[arg-type]


def test_zero_terminal_snr_rescaling():
    betas = beta_schedule("linear", 1000)
    new = rescale_zero_terminal_snr(betas)
    old_root, new_root = alphas_cumprod(betas).sqrt(), alphas_cumprod(new).sqrt()
    assert new_root[-1].item() == pytest.approx(0.0, abs=1e-12)
    assert new_root[0].item() == pytest.approx(old_root[0].item(), rel=1e-12)
    # Lin et al. 2024, Alg. 1: sqrt(abar) is shifted and scaled, i.e. an affine map of the old one
    a, b = torch.linalg.lstsq(torch.stack([old_root, torch.ones_like(old_root)], 1), new_root[:, None]).solution
    assert torch.allclose(a * old_root + b, new_root, atol=1e-12)
    assert snr(alphas_cumprod(new))[-1].item() == 0.0


def test_forward_process_and_targets_round_trip():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    a = ABAR[torch.tensor([0, 1, 200, 500, 900, 999])]
    x_t = q_sample(x0, a, noise)
    r = a.sqrt().float()[:, None]
    assert torch.allclose(x_t, r * x0 + (1 - r**2).sqrt() * noise, atol=1e-6)
    assert torch.allclose(velocity(x0, noise, a), r * noise - (1 - r**2).sqrt() * x0, atol=1e-6)
    for prediction in ("eps", "x0", "v"):  # the exact target, read back, gives (x0, eps)
        x0_hat, eps_hat = to_x0_eps(prediction, target(prediction, x0, noise, a), x_t, a)
        assert torch.allclose(x0_hat, x0, atol=2e-3), prediction  # eps at t=0 divides by sqrt(abar)
        assert torch.allclose(eps_hat, noise, atol=2e-3), prediction


def test_min_snr_weights_agree_across_parameterizations():
    # The weighted losses of eps, x0 and v predictions made from one x0 estimate must all
    # equal min(SNR, gamma) * ||x0_hat - x0||^2 (Hang et al. 2023, eq. 8).
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    a = ABAR[torch.tensor([3, 50, 300, 700, 990])]
    x_t = q_sample(x0, a, noise)
    x0_hat = x0 + 0.1 * torch.randn(5, 4, generator=g)
    eps_hat = (x_t - a.sqrt().float()[:, None] * x0_hat) / (1 - a).sqrt().float()[:, None]
    outs = {"eps": eps_hat, "x0": x0_hat, "v": velocity(x0_hat, eps_hat, a)}
    expected = snr(a).clamp(max=5.0) * (x0_hat - x0).square().mean(1).double()
    for prediction, out in outs.items():
        w = min_snr_weight(prediction, snr(a), 5.0)
        got = w * (out - target(prediction, x0, noise, a)).square().mean(1).double()
        assert torch.allclose(got, expected, rtol=1e-3), prediction


def test_posterior_mean_is_ddpm_eq7_and_recovers_clean_data_at_last_step():
    g = torch.Generator().manual_seed(2)
    x0, x_t = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    t = torch.tensor([487, 100])
    a, a_prev = ABAR[t], ABAR[t - 1]
    beta = 1 - a / a_prev
    c0 = (a_prev.sqrt() * beta / (1 - a)).float()[:, None]
    ct = ((1 - beta).sqrt() * (1 - a_prev) / (1 - a)).float()[:, None]
    assert torch.allclose(posterior_mean(x0, x_t, a, a_prev), c0 * x0 + ct * x_t, atol=1e-6)
    one = torch.ones_like(a)  # stepping to the clean data returns x0 exactly
    assert torch.allclose(posterior_mean(x0, x_t, a, one), x0, atol=1e-6)


def test_dynamic_threshold():
    x = torch.tensor([[0.5, -0.2, 0.9, 0.1], [3.0, -2.0, 1.5, 0.5]])
    out = dynamic_threshold(x, percentile=1.0)
    assert torch.equal(out[0], x[0])  # |x| <= 1: s = 1, unchanged
    assert torch.allclose(out[1], x[1] / 3.0)  # s = max |x| = 3
    assert out.abs().max() <= 1.0
