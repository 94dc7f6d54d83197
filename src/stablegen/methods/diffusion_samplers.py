"""Diffusion samplers as pure functions: randomness comes in as a `torch.Generator`.

Every sampler receives a *denoiser* `denoise(x_t, t, abar_t) -> Denoised`: the trained net
wrapped by the method (parameterization, guidance and x0 clipping already applied), where
t (B,) is the (possibly fractional) timestep fed to the net and abar_t (B,) the matching
cumulative alpha. Samplers walk a table of timesteps and take the previous timestep from
that table (never `t - T // N`), the step after the last being the clean data (abar = 1).

- `ddpm_sample`: ancestral sampling (Ho et al. 2020, Algorithm 2) on the (respaced)
  table, variance fixed-small (beta~), fixed-large (beta) or learned (Nichol & Dhariwal 2021).
- `ddim_sample`: DDIM (Song et al. 2021, eq. 12), eta = 0 deterministic, eta = 1 = DDPM
  with fixed-small variance on the same table.
- `dpmpp2m_sample`: DPM-Solver++(2M) (Lu et al. 2022), a second-order multistep solver of the
  probability-flow ODE in the data prediction, one evaluation per step.
- `edm_sample`: the Euler / Heun sampler of EDM (Karras et al. 2022, Algorithms 1 and 2,
  with the stochastic churn S_churn, S_tmin, S_tmax, S_noise) over any descending noise
  levels, for a denoiser D(x; sigma) (models trained with `parameterization: edm`).
- `heun_sample`: `edm_sample` without churn for DDPM-trained models, with Karras sigmas
  (rho = 7), on the VE form x / sqrt(abar) = x0 + sigma eps, sigma = sqrt((1 - abar) / abar).
"""

from __future__ import annotations

import math
from typing import Callable, Literal, NamedTuple

import torch
from torch import Tensor

from .diffusion_schedules import expand, posterior_mean, posterior_variance

Spacing = Literal["leading", "trailing", "linspace"]
Variance = Literal["fixed_small", "fixed_large", "learned"]


class Denoised(NamedTuple):
    """What the denoiser says about x_t: the clean image, the noise, and optionally the
    learned-variance interpolation v in [0, 1] (log var = v log beta + (1 - v) log beta~)."""

    x0: Tensor  # (B, ...)
    eps: Tensor  # (B, ...)
    var_frac: Tensor | None = None  # (B, ...) or None for a fixed variance


Denoiser = Callable[[Tensor, Tensor, Tensor], Denoised]


class SampleResult(NamedTuple):
    """A sampler's output: samples x (B, ...) and the number of denoiser evaluations."""

    x: Tensor
    nfe: int


def timestep_table(timesteps: int, steps: int, spacing: Spacing = "trailing") -> Tensor:
    """The descending timesteps (steps,) int64 a sampler visits, 0-indexed in 0..T-1.

    leading:  0, T//N, 2 T//N, ...          (DDIM's original uniform skip; never reaches T-1)
    trailing: round(T - i T/N) - 1          (Lin et al. 2024, table 2; always starts at T-1)
    linspace: round(linspace(0, T-1, N))    (starts at T-1 and ends at 0)
    """
    if not 1 <= steps <= timesteps:
        raise ValueError(f"sampling steps must be in 1..{timesteps} (the training timesteps), got {steps}")
    if spacing == "leading":
        table = torch.arange(steps, dtype=torch.int64) * (timesteps // steps)
    elif spacing == "trailing":
        table = torch.round(timesteps - torch.arange(steps, dtype=torch.float64) * (timesteps / steps)).long() - 1
        return table
    elif spacing == "linspace":
        table = torch.linspace(0, timesteps - 1, steps, dtype=torch.float64).round().long()
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose leading, trailing or linspace")
    return table.flip(0)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str) -> Tensor:
    """Standard normal noise drawn on the generator's device (if any), moved to `device`."""
    on = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=on).to(device)


def step_pairs(abar: Tensor, table: Tensor) -> list[tuple[int, float, float]]:
    """(t, abar_t, abar_prev) for each step; prev is the next table entry, clean after the last."""
    prev = torch.cat([table[1:], table.new_tensor([-1])])
    out = []
    for t, p in zip(table.tolist(), prev.tolist()):
        out.append((t, float(abar[t]), 1.0 if p < 0 else float(abar[p])))
    return out


def _full(x: Tensor, value: float) -> Tensor:
    return torch.full((x.shape[0],), value, dtype=torch.float64, device=x.device)


@torch.no_grad()
def ddpm_sample(denoise: Denoiser, x_T: Tensor, abar: Tensor, table: Tensor, generator: torch.Generator | None,
                variance: Variance = "fixed_small") -> SampleResult:
    """Ancestral sampling from x_T ~ N(0, I) down the descending timestep `table`.

    Each step draws x_prev ~ N(mu~(x0_hat, x_t), var); no noise is added on the last step.
    For a respaced table the step's beta is 1 - abar_t / abar_prev (Nichol & Dhariwal 2021,
    section 4). fixed_small: var = beta~ (the posterior variance); fixed_large: var = beta;
    learned: exp(v log beta + (1 - v) log beta~) with v from the denoiser.
    """
    if variance not in ("fixed_small", "fixed_large", "learned"):
        raise ValueError(f"unknown DDPM variance {variance!r}; choose fixed_small, fixed_large or learned")
    x = x_T
    for t, a_t, a_prev in step_pairs(abar, table):
        d = denoise(x, _full(x, t), _full(x, a_t))
        mean = posterior_mean(d.x0, x, _full(x, a_t), _full(x, a_prev))
        if a_prev == 1.0:  # last step: the mean is the sample
            x = mean
            break
        small = posterior_variance(torch.tensor(a_t), torch.tensor(a_prev)).item()  # beta~
        large = 1 - a_t / a_prev
        if variance == "fixed_small":
            std = torch.tensor(small, dtype=x.dtype, device=x.device).sqrt()
        elif variance == "fixed_large":
            std = torch.tensor(large, dtype=x.dtype, device=x.device).sqrt()
        else:
            if d.var_frac is None:
                raise ValueError("variance='learned' needs a net trained with a learned variance")
            log_var = d.var_frac * math.log(large) + (1 - d.var_frac) * math.log(small)
            std = (0.5 * log_var).exp()
        x = mean + std * randn(x.shape, generator, x.device)
    return SampleResult(x, len(table))


@torch.no_grad()
def ddim_sample(denoise: Denoiser, x_T: Tensor, abar: Tensor, table: Tensor, generator: torch.Generator | None,
                eta: float = 0.0) -> SampleResult:
    """DDIM (Song et al. 2021, eq. 12) down the descending timestep `table`:

        x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z,
        sigma^2 = eta^2 (1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev).

    eta = 0 is deterministic given x_T (the generator is never used); eta = 1 is ancestral
    DDPM with fixed-small variance on the same table.
    """
    if eta < 0:
        raise ValueError(f"DDIM eta must be >= 0, got {eta}")
    x = x_T
    for t, a_t, a_prev in step_pairs(abar, table):
        d = denoise(x, _full(x, t), _full(x, a_t))
        sigma2 = eta**2 * posterior_variance(torch.tensor(a_t), torch.tensor(a_prev)).item()
        x = a_prev**0.5 * d.x0 + max(1 - a_prev - sigma2, 0.0) ** 0.5 * d.eps
        if sigma2 > 0:
            x = x + sigma2**0.5 * randn(x.shape, generator, x.device)
    return SampleResult(x, len(table))


@torch.no_grad()
def dpmpp2m_sample(denoise: Denoiser, x_T: Tensor, abar: Tensor, table: Tensor) -> SampleResult:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) down the descending
    timestep `table`, deterministic, one evaluation per step.

    With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma), h_i =
    lambda_i - lambda_{i-1} and the data predictions x0_i of the denoiser:
        x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (e^{-h_i} - 1) D_i,
        D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},  r_i = h_{i-1} / h_i,
    with D = x0_{i-1} (first order, = DDIM) on the first step; the step after the table's
    last entry goes to the clean data (lambda = inf), where the update is x = x0 (first order).
    """
    x = x_T
    x0_prev, h_prev = None, None
    for t, a_t, a_prev in step_pairs(abar, table):
        x0 = denoise(x, _full(x, t), _full(x, a_t)).x0
        if a_prev == 1.0:  # to sigma = 0: e^{-h} = 0
            x = x0
            break
        lam_t, lam_next = 0.5 * math.log(a_t / (1 - a_t)), 0.5 * math.log(a_prev / (1 - a_prev))
        h = lam_next - lam_t
        d = x0 if x0_prev is None else (1 + h / (2 * h_prev)) * x0 - h / (2 * h_prev) * x0_prev  # 1/(2r) = h/(2h_prev)
        x = ((1 - a_prev) / (1 - a_t)) ** 0.5 * x - a_prev**0.5 * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return SampleResult(x, len(table))


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> Tensor:
    """(steps + 1,) float64 noise levels, descending, last 0 (Karras et al. 2022, eq. 5)."""
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho if steps > 1 else torch.tensor([sigma_max], dtype=torch.float64)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def sigma_to_t(sigma: Tensor, abar: Tensor) -> Tensor:
    """Fractional timestep whose sigma = sqrt((1 - abar) / abar) is `sigma`, interpolating
    the table linearly in log sigma (as k-diffusion's DiscreteSchedule does)."""
    log_sigmas = (0.5 * ((1 - abar) / abar).log())  # (T,) increasing
    log_s = sigma.log().clamp(log_sigmas[0], log_sigmas[-1])
    hi = torch.searchsorted(log_sigmas, log_s).clamp(1, len(abar) - 1)
    lo = hi - 1
    w = (log_s - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])
    return lo.to(torch.float64) + w


@torch.no_grad()
def edm_sample(denoise: Callable[[Tensor, Tensor], Tensor], noise: Tensor, sigmas: Tensor,
               generator: torch.Generator | None = None, order: int = 2, s_churn: float = 0.0,
               s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> SampleResult:
    """The EDM sampler (Karras et al. 2022, Algorithm 2; Algorithm 1 when s_churn = 0).

    Integrates dx/dsigma = (x - D(x; sigma)) / sigma down the descending noise levels `sigmas`
    (N + 1,), the last 0, from x = sigma_0 * noise; `denoise(x, sigma (B,)) -> D(x; sigma)`.
    Stochastic churn: at each sigma_i in [s_tmin, s_tmax], gamma_i = min(s_churn / N, sqrt(2) - 1)
    raises the level to t_hat = (1 + gamma_i) sigma_i by adding noise of std
    sqrt(t_hat^2 - sigma_i^2) * s_noise, drawn with `generator`, before the step. Order 2 is Heun
    with the Euler step to sigma = 0 (2N - 1 evaluations); order 1 is Euler (N).
    """
    if order not in (1, 2):
        raise ValueError(f"EDM sampler order must be 1 (Euler) or 2 (Heun), got {order}")
    if s_churn < 0 or s_noise < 0:
        raise ValueError(f"s_churn and s_noise must be >= 0, got s_churn={s_churn}, s_noise={s_noise}")
    n_steps = len(sigmas) - 1
    gamma_max = min(s_churn / n_steps, math.sqrt(2) - 1)

    def slope(x: Tensor, sigma: float) -> Tensor:  # (x - D(x; sigma)) / sigma
        return (x - denoise(x, _full(x, sigma))) / sigma

    x = noise * sigmas[0].item()
    nfe = 0
    for t_cur, t_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        gamma = gamma_max if s_tmin <= t_cur <= s_tmax else 0.0
        t_hat = t_cur * (1 + gamma)
        if gamma > 0:
            x = x + (t_hat**2 - t_cur**2) ** 0.5 * s_noise * randn(x.shape, generator, x.device)
        d = slope(x, t_hat)
        nfe += 1
        x_next = x + (t_next - t_hat) * d
        if order == 2 and t_next > 0:
            x_next = x + (t_next - t_hat) * 0.5 * (d + slope(x_next, t_next))
            nfe += 1
        x = x_next
    return SampleResult(x, nfe)


@torch.no_grad()
def heun_sample(denoise: Denoiser, noise: Tensor, abar: Tensor, steps: int, order: int = 2,
                rho: float = 7.0) -> SampleResult:
    """Deterministic EDM sampler (Karras et al. 2022, Algorithm 1 with S_churn = 0) for a
    model trained on the discrete DDPM schedule `abar`.

    Runs `edm_sample` on x = x_t / sqrt(abar) (the VE form x0 + sigma eps) over Karras sigmas;
    order 2 is Heun (Euler on the last step, 2 * steps - 1 evaluations), order 1 is Euler.
    `noise` is N(0, I). sigma_max is the largest finite sigma of the table (so
    zero-terminal-SNR schedules start one table entry early).
    """
    table_sigmas = ((1 - abar) / abar).sqrt()
    finite = table_sigmas[torch.isfinite(table_sigmas)]
    sigmas = karras_sigmas(float(finite[0]), float(finite[-1]), steps, rho)

    def d_ve(x: Tensor, s: Tensor) -> Tensor:  # D(x; sigma) through the DDPM denoiser
        a = 1 / (1 + s**2)  # abar at this sigma
        return denoise(x * expand(a.sqrt(), x), sigma_to_t(s, abar), a).x0

    return edm_sample(d_ve, noise, sigmas, order=order)
