"""Noise schedules and the Gaussian algebra of discrete-time diffusion.

Forward process (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", eq. 4):
    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),  abar_t = prod_{s<=t} (1 - beta_s)
Timesteps are 0-indexed, t = 0 .. T-1, so `abar[t]` is the table entry of step t and the
step before t = 0 is the clean data (abar = 1). All tables are float64 (T,) tensors; the
functions below take per-sample values abar_t already gathered, shape (B,) or broadcastable.

Schedules:
- linear: beta from 1e-4 to 0.02 over T = 1000 (Ho et al. 2020, section 4);
- scaled_linear: sqrt(beta) linear from sqrt(beta_start) to sqrt(beta_end) (Rombach et al.
  2022, latent diffusion; with 0.00085 .. 0.012 there);
- cosine: abar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2), s = 0.008, each
  beta capped at 0.999 (Nichol & Dhariwal 2021, "Improved DDPM", eq. 17);
- zero terminal SNR: rescale sqrt(abar) so that abar_{T-1} = 0 exactly while keeping
  abar_0 (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed",
  Algorithm 1). The last step is then pure noise; predict v or x0 with it, not epsilon.

EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models"): continuous noise levels sigma, x = x0 + sigma n, with the preconditioning of
Table 1 (`edm_precond`), log-normal training sigmas and the loss weight lambda(sigma)
(`edm_train_sigmas`, `edm_loss_weight`); the sampling levels (rho = 7, eq. 5) are
`diffusion_samplers.karras_sigmas`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

ScheduleName = Literal["linear", "scaled_linear", "cosine"]
Prediction = Literal["eps", "x0", "v"]


def beta_schedule(name: ScheduleName, timesteps: int = 1000, beta_start: float = 1e-4,
                  beta_end: float = 0.02, cosine_s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The betas of schedule `name`, shape (T,), float64."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if name == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if name == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
    if name == "cosine":
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2  # (T+1,)
        return (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    raise ValueError(f"unknown noise schedule {name!r}; choose linear, scaled_linear or cosine")


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Betas whose last abar is exactly 0, first abar unchanged (Lin et al. 2024, Alg. 1)."""
    sqrt_abar = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * first / (first - last)  # shift to 0 at T-1, keep t = 0
    abar = sqrt_abar**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1 - alphas


def alphas_cumprod(betas: Tensor) -> Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s), shape (T,)."""
    return torch.cumprod(1 - betas, dim=0)


def snr(abar: Tensor) -> Tensor:
    """Signal-to-noise ratio abar / (1 - abar) (Kingma et al. 2021, "Variational diffusion models")."""
    return abar / (1 - abar)


def expand(v: Tensor, like: Tensor) -> Tensor:
    """Per-sample values (B,) reshaped to broadcast against `like` (B, ...), in its dtype."""
    return v.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


# ---- forward process and training targets ------------------------------------------------
def q_sample(x0: Tensor, abar_t: Tensor, noise: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4); abar_t (B,)."""
    a = expand(abar_t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def velocity(x0: Tensor, noise: Tensor, abar_t: Tensor) -> Tensor:
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022, "Progressive distillation", sec. 4)."""
    a = expand(abar_t, x0)
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def target(prediction: Prediction, x0: Tensor, noise: Tensor, abar_t: Tensor) -> Tensor:
    """What a net trained with `prediction` regresses on."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        return velocity(x0, noise, abar_t)
    raise ValueError(f"unknown prediction {prediction!r}; choose eps, x0 or v")


def to_x0_eps(prediction: Prediction, out: Tensor, x_t: Tensor, abar_t: Tensor) -> tuple[Tensor, Tensor]:
    """The net's output read as `prediction`, converted to the pair (x0_hat, eps_hat)."""
    a = expand(abar_t, x_t)
    if prediction == "eps":
        return (x_t - (1 - a).sqrt() * out) / a.sqrt(), out
    if prediction == "x0":
        return out, eps_from_x0(x_t, out, abar_t)
    if prediction == "v":
        return a.sqrt() * x_t - (1 - a).sqrt() * out, a.sqrt() * out + (1 - a).sqrt() * x_t
    raise ValueError(f"unknown prediction {prediction!r}; choose eps, x0 or v")


def eps_from_x0(x_t: Tensor, x0: Tensor, abar_t: Tensor) -> Tensor:
    """The noise that takes x0 to x_t: (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""
    a = expand(abar_t, x_t)
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


def min_snr_weight(prediction: Prediction, snr_t: Tensor, gamma: float) -> Tensor:
    """Min-SNR-gamma loss weight for an MSE on `prediction`'s target (Hang et al. 2023, sec. 3.4).

    The x0-space weight min(SNR, gamma) divided by what the target's MSE already carries:
    eps: min(SNR, gamma) / SNR; x0: min(SNR, gamma); v: min(SNR, gamma) / (SNR + 1).
    """
    clipped = snr_t.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr_t
    if prediction == "x0":
        return clipped
    if prediction == "v":
        return clipped / (snr_t + 1)
    raise ValueError(f"unknown prediction {prediction!r}; choose eps, x0 or v")


# ---- reverse-process Gaussians between any two table entries ----------------------------
def posterior_variance(abar_t: Tensor, abar_prev: Tensor) -> Tensor:
    """Variance of q(x_prev | x_t, x0) for a (possibly respaced) step prev < t.

    beta~ = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev) (Ho et al. 2020, eq. 7);
    the same quantity is DDIM's sigma^2 at eta = 1 (Song et al. 2021, eq. 16).
    """
    return (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)


def posterior_mean(x0: Tensor, x_t: Tensor, abar_t: Tensor, abar_prev: Tensor) -> Tensor:
    """Mean of q(x_prev | x_t, x0) (Ho et al. 2020, eq. 7) for a step prev < t."""
    alpha = abar_t / abar_prev  # the step's alpha; its beta is 1 - alpha
    c0 = abar_prev.sqrt() * (1 - alpha) / (1 - abar_t)
    ct = alpha.sqrt() * (1 - abar_prev) / (1 - abar_t)
    return expand(c0, x0) * x0 + expand(ct, x_t) * x_t


def dynamic_threshold(x0: Tensor, percentile: float) -> Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, section 2.3).

    s = the `percentile` quantile of |x0| per sample, at least 1; x0 is clipped to [-s, s]
    and divided by s, so saturated pixels are pushed inward instead of piling up at +-1.
    """
    flat = x0.reshape(x0.shape[0], -1).abs()
    s = torch.quantile(flat.float(), percentile, dim=1).clamp(min=1.0).to(x0.dtype)  # (B,)
    s = expand(s, x0)
    return torch.maximum(torch.minimum(x0, s), -s) / s


# ---- EDM (Karras et al. 2022): preconditioning and training noise levels -----------------
def edm_precond(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) of Table 1 ("ours"), elementwise in sigma:
    c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4; D = c_skip x + c_out F(c_in x; c_noise)."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt(), sigma.log() / 4


def edm_loss_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 = 1 / c_out^2 (Table 1): the net's own
    target F = (x0 - c_skip x) / c_out then has unit weight at every sigma."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_train_sigmas(b: int, p_mean: float, p_std: float, device: torch.device | str = "cpu",
                     generator: torch.Generator | None = None) -> Tensor:
    """(b,) training noise levels, ln(sigma) ~ N(P_mean, P_std^2) (Table 1: -1.2, 1.2)."""
    on = generator.device if generator is not None else device
    return (torch.randn(b, generator=generator, device=on).to(device) * p_std + p_mean).exp()
