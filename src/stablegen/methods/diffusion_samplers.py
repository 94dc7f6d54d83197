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
- `heun_sample`: the deterministic Euler / Heun probability-flow sampler of EDM
  (Karras et al. 2022, Algorithm 1) with Karras sigmas (rho = 7), on the VE form
  x / sqrt(abar) = x0 + sigma eps, sigma = sqrt((1 - abar) / abar).
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
def heun_sample(denoise: Denoiser, noise: Tensor, abar: Tensor, steps: int, order: int = 2,
                rho: float = 7.0) -> SampleResult:
    """Deterministic EDM sampler (Karras et al. 2022, Algorithm 1 with S_churn = 0).

    Integrates the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma on
    x = x_t / sqrt(abar) from sigma_max to 0 over Karras sigmas; order 2 is Heun (Euler
    on the last step, 2 * steps - 1 evaluations), order 1 is Euler. `noise` is N(0, I).
    sigma_max is the largest finite sigma of the table (so zero-terminal-SNR schedules
    start one table entry early).
    """
    if order not in (1, 2):
        raise ValueError(f"EDM sampler order must be 1 (Euler) or 2 (Heun), got {order}")
    table_sigmas = ((1 - abar) / abar).sqrt()
    finite = table_sigmas[torch.isfinite(table_sigmas)]
    sigmas = karras_sigmas(float(finite[0]), float(finite[-1]), steps, rho)

    def d_over_sigma(x: Tensor, sigma: float) -> Tensor:  # (x - D(x; sigma)) / sigma
        s = _full(x, sigma)
        a = 1 / (1 + s**2)  # abar at this sigma
        x0 = denoise(x * expand(a.sqrt(), x), sigma_to_t(s, abar), a).x0
        return (x - x0) / sigma

    x = noise * sigmas[0].item()
    nfe = 0
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d = d_over_sigma(x, sigma)
        nfe += 1
        x_next = x + (sigma_next - sigma) * d
        if order == 2 and sigma_next > 0:
            d2 = d_over_sigma(x_next, sigma_next)
            nfe += 1
            x_next = x + (sigma_next - sigma) * 0.5 * (d + d2)
        x = x_next
    return SampleResult(x, nfe)
