"""Denoising diffusion models: DDPM training, DDPM / DDIM / EDM-Heun sampling, VLB likelihood.

Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (L_simple, ancestral sampling);
Nichol & Dhariwal 2021, "Improved DDPM" (cosine schedule, learned variance, hybrid loss);
Song et al. 2021, "Denoising Diffusion Implicit Models" (DDIM); Karras et al. 2022, "EDM"
(Heun sampler); Salimans & Ho 2022 (v-prediction); Hang et al. 2023 (min-SNR-gamma);
Ho & Salimans 2022, "Classifier-Free Diffusion Guidance"; Saharia et al. 2022, Imagen
(dynamic thresholding); Lin et al. 2024 (zero terminal SNR, trailing timesteps).
`parameterization: edm` trains and samples the same nets as an EDM model instead (Karras et
al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models": Table 1's
preconditioning, log-normal sigmas, loss weight, Algorithm 2's sampler): `EDMDiffusion`.

The schedule algebra is in `diffusion_schedules`, the samplers (pure functions) in
`diffusion_samplers`; this file holds the config, the training loss and the glue.

Likelihood convention (`log_prob`). On data with `DataInfo.levels = L` (digits: 17) the
bound is the discrete one of Ho et al. (section 3.3): a discretized Gaussian decoder at
t = 0 with bins of width 2 / (L - 1) around the L grey levels -1 + 2l/(L-1) (the outer bins
reach to +-inf), giving a lower bound on log P(levels). `log_prob(x)` returns it as the
*continuous density over uniformly dequantized data* that is constant on each
dequantization bin [-1 + 2l/L, -1 + 2(l+1)/L):
    log_prob(x) = log P(l(x)) - D log(2 / L),   l(x) = floor((x + 1) / 2 * L) clamped to 0..L-1,
so grid images and their `metrics.likelihood.dequantize`d versions score the same, and
    metrics.likelihood.bits_per_dim(log_prob(x), D, continuous=True)
is exactly the discrete bound's bits/dim. Without levels (2-D toys) the decoder is a
continuous Gaussian and `log_prob` is the negative VLB of the density, in nats per sample.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from ..base import (Batch, DataInfo, ExportInput, ExportSpec, FamilyConfig, Method, NetContract, Phase, dims,
                    dummy_data, dummy_labels)
from ..nets.denoiser import MLPDenoiser
from ..nets.unet import UNet
from .diffusion_samplers import (Denoised, Spacing, Variance, ddim_sample, ddpm_sample, dpmpp2m_sample, edm_sample,
                                 heun_sample, karras_sigmas, randn, timestep_table)
from .diffusion_schedules import (Prediction, ScheduleName, alphas_cumprod, beta_schedule, dynamic_threshold,
                                  edm_loss_weight, edm_precond, edm_train_sigmas, eps_from_x0, expand,
                                  min_snr_weight, posterior_mean, posterior_variance, q_sample,
                                  rescale_zero_terminal_snr, snr, target, to_x0_eps)

Sampler = Literal["ddpm", "ddim", "dpmpp2m", "heun", "euler"]
EDM_TIME_SCALE = 250.0  # edm: the net sees t = 250 c_noise = 62.5 ln(sigma), so sigma in [0.002, 80]
# spans t in [-388, 274], about the range of DDPM's timesteps 0..999 that the sinusoidal embedding expects


class UNetOptions(BaseModel):
    """The image denoiser (nets/unet.py)."""

    model_config = ConfigDict(extra="forbid")
    channels: int = Field(64, ge=8)  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per level; each level halves the size
    num_res_blocks: int = Field(2, ge=1)  # residual blocks per level
    attention_resolutions: tuple[int, ...] = (4,)  # resolutions (px) with self-attention (the middle always has it)
    heads: int = Field(4, ge=1)  # attention heads
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # dropout inside residual blocks


class MLPOptions(BaseModel):
    """The vector denoiser (nets/denoiser.py)."""

    model_config = ConfigDict(extra="forbid")
    width: int = Field(256, ge=8)  # hidden width
    depth: int = Field(3, ge=1)  # residual FiLM blocks
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # dropout inside blocks


class DiffusionConfig(FamilyConfig):
    """Options of the diffusion family; defaults are the stable choice."""

    NETS = ("denoiser",)  # model.nets: denoiser(x_t, t, y) -> the prediction
    family: Literal["diffusion"] = "diffusion"
    # noise schedule
    schedule: ScheduleName = "linear"  # beta schedule: linear (DDPM), scaled_linear, cosine (improved DDPM)
    timesteps: int = Field(1000, ge=2)  # T, number of diffusion steps in training
    beta_start: float = Field(1e-4, gt=0.0, lt=1.0)  # first beta (linear, scaled_linear)
    beta_end: float = Field(0.02, gt=0.0, lt=1.0)  # last beta (linear, scaled_linear)
    cosine_s: float = Field(0.008, ge=0.0)  # offset s of the cosine schedule
    zero_terminal_snr: bool = False  # rescale so abar_{T-1} = 0 (Lin et al. 2024); needs prediction v or x0
    # objective
    prediction: Prediction = "eps"  # what the net predicts: eps, x0 or v
    loss_weighting: Literal["simple", "min_snr"] = "simple"  # plain MSE, or min-SNR-gamma weights
    min_snr_gamma: float = Field(5.0, gt=0.0)  # gamma of min-SNR weighting
    learned_variance: bool = False  # net also outputs the variance; adds the VLB term (hybrid loss)
    vlb_weight: float = Field(0.001, ge=0.0)  # lambda of L_simple + lambda L_vlb (improved DDPM)
    # class conditioning (used when the data are labelled)
    label_dropout: float = Field(0.1, ge=0.0, le=1.0)  # share of labels dropped to "no label" in training
    guidance: float = 1.0  # default CFG scale: 0 unconditional, 1 conditional, > 1 guided
    # sampling defaults (each can be overridden in sample())
    sampler: Sampler = "ddim"  # ddpm (ancestral), ddim, dpmpp2m (DPM-Solver++(2M)), heun / euler (EDM, deterministic)
    steps: int = Field(50, ge=1)  # sampling steps (ddpm/ddim: table entries; heun/euler: noise levels)
    eta: float = Field(0.0, ge=0.0)  # DDIM stochasticity (0 deterministic, 1 = DDPM fixed-small)
    spacing: Spacing = "trailing"  # timestep spacing for fewer steps than T
    # DDPM variance: fixed_small (beta~), fixed_large (beta), learned; auto: learned if trained so
    variance: Literal["auto", "fixed_small", "fixed_large", "learned"] = "auto"
    # predicted-x0 processing: clip to [-1, 1], dynamic thresholding, none; auto: clip images only
    clip_x0: Literal["auto", "none", "clip", "dynamic"] = "auto"
    threshold_percentile: float = Field(0.995, gt=0.0, le=1.0)  # dynamic thresholding quantile
    vlb_timesteps: int | None = Field(None, ge=1)  # log_prob: KL terms estimated from this many strata (None: all T)
    # EDM (Karras et al. 2022); the values are the paper's (Table 1 and Table 5)
    parameterization: Literal["ddpm", "edm"] = "ddpm"  # ddpm: the beta schedule above; edm: preconditioned sigma
    sigma_data: float = Field(0.5, gt=0.0)  # edm: data standard deviation in the preconditioning
    p_mean: float = -1.2  # edm: mean of ln(sigma) in training
    p_std: float = Field(1.2, gt=0.0)  # edm: std of ln(sigma) in training
    sigma_min: float = Field(0.002, gt=0.0)  # edm: smallest sampling noise level
    sigma_max: float = Field(80.0, gt=0.0)  # edm: largest sampling noise level
    rho: float = Field(7.0, gt=0.0)  # edm: rho of the sampling levels (Karras et al. 2022, eq. 5)
    s_churn: float = Field(0.0, ge=0.0)  # edm: stochastic churn (0 = deterministic Algorithm 1)
    s_tmin: float = Field(0.0, ge=0.0)  # edm: churn only at sigma >= s_tmin ...
    s_tmax: float | None = Field(None, ge=0.0)  # ... and <= s_tmax (None: no upper bound)
    s_noise: float = Field(1.0, ge=0.0)  # edm: std multiplier of the churn noise
    # built-in nets (model.nets gives your own)
    net: Literal["auto", "unet", "mlp"] = "auto"  # auto: U-Net for images, MLP for vectors
    unet: UNetOptions = UNetOptions()  # the image denoiser's options
    mlp: MLPOptions = MLPOptions()  # the vector denoiser's options

    @model_validator(mode="after")
    def _check(self) -> "DiffusionConfig":
        if self.zero_terminal_snr and self.prediction == "eps":
            raise ValueError("zero_terminal_snr makes x0 unrecoverable from eps at the last step: "
                             "use prediction 'v' or 'x0'")
        if self.variance == "learned" and not self.learned_variance:
            raise ValueError("variance='learned' needs learned_variance: true")
        if self.steps > self.timesteps and self.sampler in ("ddpm", "ddim", "dpmpp2m"):
            raise ValueError(f"steps={self.steps} exceeds timesteps={self.timesteps}")
        if self.parameterization == "edm":
            ddpm_only = {f"sampler {self.sampler}": self.sampler in ("ddpm", "ddim", "dpmpp2m"),
                         f"prediction {self.prediction!r}": self.prediction != "eps",
                         "learned_variance": self.learned_variance, "zero_terminal_snr": self.zero_terminal_snr,
                         "loss_weighting min_snr": self.loss_weighting != "simple"}
            given = [name for name, on in ddpm_only.items() if on]
            if given:
                raise ValueError(f"parameterization 'edm' has its own network output, loss weight and samplers; "
                                 f"{', '.join(given)} belong to parameterization 'ddpm' (edm samplers: heun, euler)")
            if self.sigma_min >= self.sigma_max:
                raise ValueError(f"sigma_min={self.sigma_min} must be below sigma_max={self.sigma_max}")
        return self


# ---- Gaussian log-densities for the variational bound ------------------------------------
def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 * (-logvar2).exp())


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor, levels: int) -> Tensor:
    """log P(x) elementwise for x on the grid -1 + 2l/(levels-1) under N(mean, e^{2 log_scale})
    integrated over the bin of half-width 1/(levels-1); the outer bins extend to +-inf
    (Ho et al. 2020, eq. 13)."""
    x, mean, log_scale = x.double(), mean.double(), log_scale.double()
    half = 1.0 / (levels - 1)
    inv_std = (-log_scale).exp()
    z_plus, z_minus = (x - mean + half) * inv_std, (x - mean - half) * inv_std
    log_cdf_plus = torch.special.log_ndtr(z_plus)  # bottom bin: P(X < x + half)
    log_sf_minus = torch.special.log_ndtr(-z_minus)  # top bin: P(X > x - half)
    # middle bins: the difference of CDFs, computed in the tail where it is accurate
    mid = torch.where(z_minus > 0, torch.special.ndtr(-z_minus) - torch.special.ndtr(-z_plus),
                      torch.special.ndtr(z_plus) - torch.special.ndtr(z_minus))
    log_mid = mid.clamp(min=1e-30).log()
    out = torch.where(x < -1 + half, log_cdf_plus, torch.where(x > 1 - half, log_sf_minus, log_mid))
    return out.float()


class _ClassLabels:
    """Label dropout in training and label choice in sampling (classifier-free guidance) for
    a method with `cfg.label_dropout`, `info`, `conditional` and `device`."""

    def _labels_for_training(self, batch: Batch) -> Tensor | None:
        if not self.conditional:
            return None
        if batch.y is None:
            raise ValueError("this diffusion model is class-conditional (the data has labels) "
                             "but the batch has none; set data.labels: true")
        drop = torch.rand(batch.y.shape, device=batch.y.device) < self.cfg.label_dropout
        return torch.where(drop, torch.full_like(batch.y, self.info.num_classes), batch.y)

    def _labels_for_sampling(self, n: int, labels, generator: torch.Generator | None) -> Tensor | None:
        return sampling_labels(self.info, self.conditional, self.device, n, labels, generator)


def sampling_labels(info: DataInfo, conditional: bool, device: torch.device, n: int, labels,
                    generator: torch.Generator | None) -> Tensor | None:
    """Labels (n,) to sample a class-conditional model with: `labels` (one class or n), or drawn
    uniformly with `generator` when None; None for an unconditional model."""
    if not conditional:
        if labels is not None:
            raise ValueError("labels given, but this model was trained without labels")
        return None
    k = info.num_classes
    if labels is None:
        dev = generator.device if generator is not None else device
        return torch.randint(k, (n,), generator=generator, device=dev).to(device)
    y = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    if y.numel() == 1:
        y = y.expand(n).clone()
    if y.shape != (n,) or int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"labels must be one class or {n} classes in 0..{k - 1}")
    return y


class Diffusion(_ClassLabels, Method):
    """A denoising diffusion model around a denoising net `net(x_t, t, y) -> output`."""

    def __init__(self, cfg: DiffusionConfig, info: DataInfo, net: nn.Module):
        super().__init__()
        self.cfg, self.info, self.net = cfg, info, net
        self.conditional = info.num_classes is not None
        betas = beta_schedule(cfg.schedule, cfg.timesteps, cfg.beta_start, cfg.beta_end, cfg.cosine_s)
        if cfg.zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        abar = alphas_cumprod(betas)
        self.register_buffer("betas", betas, persistent=False)  # (T,) float64
        self.register_buffer("abar", abar, persistent=False)  # (T,) float64
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        post_var = posterior_variance(abar, abar_prev)  # beta~_t, 0 at t = 0
        # log beta~ with the t = 0 entry (0) replaced by beta~_1, as in improved DDPM
        self.register_buffer("log_var_small", torch.cat([post_var[1:2], post_var[1:]]).log(), persistent=False)
        self.register_buffer("log_var_large", torch.cat([post_var[1:2], betas[1:]]).log(), persistent=False)
        clip = cfg.clip_x0 if cfg.clip_x0 != "auto" else ("clip" if info.kind == "image" else "none")
        self.clip_x0: Literal["none", "clip", "dynamic"] = clip
        self.variance: Variance = cfg.variance if cfg.variance != "auto" else (
            "learned" if cfg.learned_variance else "fixed_small")

    # ---- training -------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        return [Phase("main", list(self.net.parameters()), self.loss)]

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        """Net output -> (mean output, raw variance output in [-1, 1] or None)."""
        if self.cfg.learned_variance:
            mean_out, var_out = out.chunk(2, dim=1)
            return mean_out, var_out
        return out, None

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-sample L_simple (optionally min-SNR weighted), plus lambda T L_t with a learned variance."""
        x0 = batch.x  # (B, ...)
        t = torch.randint(self.cfg.timesteps, (x0.shape[0],), device=x0.device)  # (B,)
        noise = torch.randn_like(x0)
        a = self.abar[t]  # (B,) float64
        x_t = q_sample(x0, a, noise)
        out, var_out = self._split(self.net(x_t, t.to(x0.dtype), self._labels_for_training(batch)))
        mse = (out - target(self.cfg.prediction, x0, noise, a)).square().flatten(1).mean(1)  # (B,)
        loss = mse
        if self.cfg.loss_weighting == "min_snr":
            loss = min_snr_weight(self.cfg.prediction, snr(a), self.cfg.min_snr_gamma).to(mse.dtype) * mse
        logs = {"mse": mse.detach().mean()}
        if var_out is not None:
            # stop-grad on the mean: the VLB term trains only the variance (improved DDPM, sec. 3.1)
            x0_hat, _ = to_x0_eps(self.cfg.prediction, out.detach(), x_t, a)
            vlb = self._vlb_terms(x0, x_t, t, x0_hat, var_out, "learned").flatten(1).mean(1)
            vlb = vlb / math.log(2.0)  # (B,) bits/dim
            loss = loss + self.cfg.vlb_weight * self.cfg.timesteps * vlb
            logs["vlb"] = vlb.detach().mean()
        return loss, logs

    # ---- the reverse process p(x_{t-1} | x_t) ---------------------------------------------
    def _log_var(self, t: Tensor, var_out: Tensor | None, like: Tensor, variance: Variance) -> Tensor:
        """log sigma_t^2 of p(x_{t-1} | x_t) broadcast to `like`; t (B,) int64. learned:
        v log beta_t + (1 - v) log beta~_t with v = (var_out + 1) / 2 (improved DDPM, eq. 15)."""
        small = expand(self.log_var_small[t], like)
        if variance == "learned":
            frac = (var_out + 1) / 2
            return frac * expand(self.betas[t].log(), like) + (1 - frac) * small
        return expand(self.log_var_large[t], like) if variance == "fixed_large" else small

    def _vlb_terms(self, x0: Tensor, x_t: Tensor, t: Tensor, x0_hat: Tensor, var_out: Tensor | None,
                   variance: Variance) -> Tensor:
        """Elementwise L_{t-1} in nats: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for t > 0 and
        the decoder's -log p(x0 | x_1) at t = 0 (discretized when the data have levels)."""
        a = self.abar[t]
        a_prev = torch.where(t > 0, self.abar[(t - 1).clamp(min=0)], torch.ones_like(a))
        mean_true = posterior_mean(x0, x_t, a, a_prev)
        log_var_true = expand(self.log_var_small[t], x0)
        mean_model = posterior_mean(x0_hat, x_t, a, a_prev)
        log_var_model = self._log_var(t, var_out, x0, variance)
        kl = normal_kl(mean_true, log_var_true, mean_model, log_var_model)
        if self.info.levels:
            nll = -discretized_gaussian_log_likelihood(x0, mean_model, 0.5 * log_var_model, self.info.levels)
        else:
            nll = 0.5 * (math.log(2 * math.pi) + log_var_model + (x0 - mean_model) ** 2 * (-log_var_model).exp())
        return torch.where((t == 0).reshape(-1, *[1] * (x0.dim() - 1)), nll, kl)

    # ---- denoiser for the samplers --------------------------------------------------------
    def _net_out(self, x_t: Tensor, t: Tensor, y: Tensor | None, guidance: float) -> Tensor:
        """Net output with classifier-free guidance out_u + w (out_c - out_u) on the mean part."""
        if y is None:
            return self.net(x_t, t.to(x_t.dtype), None)
        null = torch.full_like(y, self.info.num_classes)
        if guidance == 1.0:
            return self.net(x_t, t.to(x_t.dtype), y)
        if guidance == 0.0:
            return self.net(x_t, t.to(x_t.dtype), null)
        both = self.net(torch.cat([x_t, x_t]), torch.cat([t, t]).to(x_t.dtype), torch.cat([y, null]))
        cond, uncond = both.chunk(2, dim=0)
        c_mean, c_var = self._split(cond)
        u_mean, _ = self._split(uncond)
        mean = u_mean + guidance * (c_mean - u_mean)
        return mean if c_var is None else torch.cat([mean, c_var], dim=1)

    def _x0_eps(self, out: Tensor, x_t: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """(x0_hat, eps_hat) from the mean output, x0_hat clipped or thresholded as configured
        and eps_hat recomputed from it so the pair stays consistent with x_t."""
        x0, eps = to_x0_eps(self.cfg.prediction, out, x_t, a)
        if self.clip_x0 == "none":
            return x0, eps
        x0 = x0.clamp(-1, 1) if self.clip_x0 == "clip" else dynamic_threshold(x0, self.cfg.threshold_percentile)
        return x0, eps_from_x0(x_t, x0, a)

    def _denoiser(self, y: Tensor | None, guidance: float):
        def denoise(x_t: Tensor, t: Tensor, a: Tensor) -> Denoised:
            out, var_out = self._split(self._net_out(x_t, t, y, guidance))
            x0, eps = self._x0_eps(out, x_t, a)
            return Denoised(x0, eps, None if var_out is None else (var_out + 1) / 2)
        return denoise

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, sampler: Sampler | None = None,
               steps: int | None = None, guidance: float | None = None, eta: float | None = None,
               labels: Tensor | int | list[int] | None = None, spacing: Spacing | None = None,
               variance: Variance | None = None) -> Tensor:
        """n samples (n, *shape); every keyword defaults to the config's value.

        sampler: ddpm (ancestral, `variance`), ddim (`eta`), dpmpp2m, heun / euler (EDM, deterministic);
        steps: table entries (ddpm/ddim/dpmpp2m, taken with `spacing`) or noise levels (heun/euler);
        guidance: classifier-free guidance scale (labelled data); labels: one class for all,
        or n classes; None draws them uniformly with `generator`.
        """
        cfg = self.cfg
        sampler = sampler or cfg.sampler
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        steps = cfg.steps if steps is None else steps
        guidance = cfg.guidance if guidance is None else guidance
        eta = cfg.eta if eta is None else eta
        y = self._labels_for_sampling(n, labels, generator)
        if sampler not in ("ddpm", "ddim", "dpmpp2m", "heun", "euler"):
            raise ValueError(f"unknown sampler {sampler!r}; choose ddpm, ddim, heun or euler, or dpmpp2m")
        noise = randn((n, *self.info.shape), generator, self.device)
        denoise = self._denoiser(y, guidance)
        was_training = self.training
        self.eval()
        try:
            if sampler in ("heun", "euler"):
                return heun_sample(denoise, noise, self.abar, steps, order=2 if sampler == "heun" else 1).x
            table = timestep_table(cfg.timesteps, steps, spacing or cfg.spacing).to(self.device)
            if sampler == "ddim":
                return ddim_sample(denoise, noise, self.abar, table, generator, eta).x
            if sampler == "dpmpp2m":
                return dpmpp2m_sample(denoise, noise, self.abar, table).x
            variance = variance or self.variance
            if variance == "learned" and not cfg.learned_variance:
                raise ValueError("variance='learned' needs a model trained with learned_variance: true")
            return ddpm_sample(denoise, noise, self.abar, table, generator, variance).x
        finally:
            self.train(was_training)

    def export_net(self) -> ExportSpec:
        """The denoiser: (x_t (n, *shape), t (n,) [, y (n,)]) -> net output; the schedule and the
        prediction type go to config.json, the sampling loop is not exported."""
        cfg, shape = self.cfg, tuple(self.info.shape)
        inputs = {"x_t": ExportInput(("n", *shape), torch.float32,
                                     "noisy data, sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps"),
                  "t": ExportInput(("n",), torch.float32, f"timestep index 0..{cfg.timesteps - 1}, as a float")}
        if self.conditional:
            k = self.info.num_classes
            inputs["y"] = ExportInput(("n",), torch.int64, f"class labels 0..{k - 1}; {k} = no label "
                                      "(classifier-free guidance mixes the two outputs)")
        output = f"the {cfg.prediction} prediction, (n, *shape)"
        if cfg.learned_variance:
            output = (f"(n, 2C, ...): the {cfg.prediction} prediction, then v in [-1, 1] with log sigma_t^2 = "
                      "(v + 1) / 2 log beta_t + (1 - (v + 1) / 2) log beta~_t")
        notes = [f"no sampling loop is exported: `stablegen sample` runs the {cfg.sampler} sampler with "
                 f"{cfg.steps} steps (model.* in this file) around this denoiser, from x_T = torch.randn(n, *shape)"]
        extra = {"prediction": cfg.prediction, "timesteps": cfg.timesteps, "betas": self.betas.tolist(),
                 "alphas_cumprod": self.abar.tolist(), "clip_x0": self.clip_x0, "variance": self.variance}
        return ExportSpec(self.net, lambda x_t, t, *y: self.net(x_t, t, *y), inputs, output, notes, extra)

    # ---- likelihood -----------------------------------------------------------------------
    def _levels_and_grid(self, x: Tensor) -> tuple[Tensor, float]:
        """Grid images for the discrete bound and the per-sample shift to a dequantized density."""
        levels = self.info.levels
        lv = ((x + 1) / 2 * levels).floor().clamp(0, levels - 1)  # the dequantization bin of x
        grid = lv / (levels - 1) * 2 - 1
        dim = x[0].numel()
        return grid, dim * math.log(levels / 2.0)

    @torch.no_grad()
    def log_prob(self, x: Tensor, *, y: Tensor | None = None, timesteps: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Negative variational bound, nats per sample (N,); see the module docstring.

        timesteps=None takes the config's `vlb_timesteps`; when that is None too, all T terms
        are summed (T net evaluations per batch). An integer k < T - 1
        estimates the sum of the T - 1 KL terms by stratified sampling: the steps 1..T-1 are
        cut into k equal strata and each sample draws its own step in each, weighted by the
        stratum's size (unbiased for the bound; k + 1 evaluations). y: labels for a
        conditional model; None uses "no label", the unconditional model p(x). Timesteps and
        x_t ~ q(x_t | x0) are drawn with `generator`.
        """
        was_training = self.training
        self.eval()
        try:
            shift = 0.0
            if self.info.levels:
                x, shift = self._levels_and_grid(x)
            n, T = x.shape[0], self.cfg.timesteps
            if self.conditional and y is None:
                y = torch.full((n,), self.info.num_classes, dtype=torch.long, device=x.device)
            timesteps = timesteps or self.cfg.vlb_timesteps
            k = T - 1 if timesteps is None else min(max(int(timesteps), 1), T - 1)
            edges = torch.linspace(1, T, k + 1, dtype=torch.float64).round().long()  # strata [e_j, e_{j+1})
            total = torch.zeros(n, dtype=torch.float64, device=x.device)
            for j in range(-1, k):
                if j < 0:  # the decoder term, t = 0
                    t, weight = torch.zeros(n, dtype=torch.long), 1.0
                else:
                    lo, hi = int(edges[j]), int(edges[j + 1])
                    u = torch.rand(n, generator=generator, device=generator.device if generator else "cpu")
                    t, weight = lo + (u * (hi - lo)).long().clamp(max=hi - lo - 1), float(hi - lo)
                t = t.to(x.device)
                x_t = q_sample(x, self.abar[t], randn(x.shape, generator, x.device))
                out, var_out = self._split(self.net(x_t, t.to(x.dtype), y))
                x0_hat, _ = self._x0_eps(out, x_t, self.abar[t])
                term = self._vlb_terms(x, x_t, t, x0_hat, var_out, self.variance).flatten(1).sum(1)
                total += weight * term.double()
            a_last = self.abar[-1].expand(n)
            prior = normal_kl(expand(a_last.sqrt(), x) * x, torch.log1p(-a_last).reshape(-1, *[1] * (x.dim() - 1)),
                              torch.zeros_like(x), torch.zeros_like(x)).flatten(1).sum(1)
            return (-(total + prior.double()) + shift).float()
        finally:
            self.train(was_training)


class EDMDiffusion(_ClassLabels, Method):
    """EDM (Karras et al. 2022) around the same denoising nets: D(x; sigma) = c_skip x +
    c_out F(c_in x, t, y) with Table 1's coefficients, t = EDM_TIME_SCALE c_noise."""

    def __init__(self, cfg: DiffusionConfig, info: DataInfo, net: nn.Module):
        super().__init__()
        self.cfg, self.info, self.net = cfg, info, net
        self.conditional = info.num_classes is not None

    def phases(self) -> list[Phase]:
        return [Phase("main", list(self.net.parameters()), self.loss)]

    def denoise(self, x: Tensor, sigma: Tensor, y: Tensor | None) -> Tensor:
        """D(x; sigma) for x (B, ...) at noise levels sigma (B,)."""
        c_skip, c_out, c_in, c_noise = edm_precond(sigma, self.cfg.sigma_data)  # each (B,)
        out = self.net(expand(c_in, x) * x, EDM_TIME_SCALE * c_noise.to(x.dtype), y)  # F, (B, ...)
        return expand(c_skip, x) * x + expand(c_out, x) * out

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-sample lambda(sigma) |D(x0 + sigma n; sigma) - x0|^2 (mean over dimensions),
        ln(sigma) ~ N(p_mean, p_std^2) (Karras et al. 2022, eq. 2 with Table 1)."""
        x0 = batch.x  # (B, ...)
        sigma = edm_train_sigmas(x0.shape[0], self.cfg.p_mean, self.cfg.p_std, x0.device)  # (B,)
        x = x0 + expand(sigma, x0) * torch.randn_like(x0)
        mse = (self.denoise(x, sigma, self._labels_for_training(batch)) - x0).square().flatten(1).mean(1)  # (B,)
        return edm_loss_weight(sigma, self.cfg.sigma_data).to(mse.dtype) * mse, {"mse": mse.detach().mean()}

    def _guided(self, y: Tensor | None, guidance: float):
        """D(x; sigma) with classifier-free guidance D_u + w (D_c - D_u) on labelled data."""
        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            sigma = sigma.to(x.dtype)
            if y is None or guidance == 1.0:
                return self.denoise(x, sigma, y)
            null = torch.full_like(y, self.info.num_classes)
            if guidance == 0.0:
                return self.denoise(x, sigma, null)
            cond, uncond = self.denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([y, null])).chunk(2)
            return uncond + guidance * (cond - uncond)
        return denoise

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, sampler: Sampler | None = None,
               steps: int | None = None, guidance: float | None = None,
               labels: Tensor | int | list[int] | None = None, s_churn: float | None = None, **kw) -> Tensor:
        """n samples by EDM's Algorithm 2 (heun) or its Euler variant over `steps` Karras
        levels from sigma_max to sigma_min, then 0; every keyword defaults to the config's value."""
        if kw:
            raise TypeError(f"EDM sampling takes no options {sorted(kw)} (those are DDPM/DDIM's); it has "
                            "sampler=, steps=, guidance=, labels= and s_churn=")
        cfg = self.cfg
        sampler = sampler or cfg.sampler
        if sampler not in ("heun", "euler"):
            raise ValueError(f"unknown sampler {sampler!r} for parameterization 'edm'; choose heun or euler")
        steps = cfg.steps if steps is None else steps
        guidance = cfg.guidance if guidance is None else guidance
        y = self._labels_for_sampling(n, labels, generator)
        sigmas = karras_sigmas(cfg.sigma_min, cfg.sigma_max, steps, cfg.rho)
        noise = randn((n, *self.info.shape), generator, self.device)
        was_training = self.training
        self.eval()
        try:
            return edm_sample(self._guided(y, guidance), noise, sigmas, generator, 2 if sampler == "heun" else 1,
                              cfg.s_churn if s_churn is None else s_churn, cfg.s_tmin,
                              math.inf if cfg.s_tmax is None else cfg.s_tmax, cfg.s_noise).x
        finally:
            self.train(was_training)

    def export_net(self) -> ExportSpec:
        """The raw net F: (c_in x (n, *shape), t (n,) [, y (n,)]) -> F; the preconditioning
        and sampling loop go to config.json as numbers and a note."""
        cfg, shape = self.cfg, tuple(self.info.shape)
        inputs = {"x_in": ExportInput(("n", *shape), torch.float32, "c_in x, x = x0 + sigma n"),
                  "t": ExportInput(("n",), torch.float32, f"{EDM_TIME_SCALE} ln(sigma) / 4")}
        if self.conditional:
            k = self.info.num_classes
            inputs["y"] = ExportInput(("n",), torch.int64, f"class labels 0..{k - 1}; {k} = no label")
        notes = ["D(x; sigma) = c_skip x + c_out F with c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / "
                 "sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2) (Karras et al. 2022, Table 1); no sampling "
                 f"loop is exported: `stablegen sample` runs {cfg.sampler} over {cfg.steps} Karras levels"]
        extra = {"parameterization": "edm", "sigma_data": cfg.sigma_data, "sigma_min": cfg.sigma_min,
                 "sigma_max": cfg.sigma_max, "rho": cfg.rho, "time_scale": EDM_TIME_SCALE}
        return ExportSpec(self.net, lambda x, t, *y: self.net(x, t, *y), inputs, "F, (n, *shape)", notes, extra)


def build(cfg: DiffusionConfig, info: DataInfo,
          nets: dict[str, nn.Module] | None = None) -> Diffusion | EDMDiffusion:
    """The diffusion method for data described by `info` around the user's `nets["denoiser"]`, or
    a built-in one: a U-Net for images, an MLP for vectors."""
    if info.kind == "tokens" or (not nets and info.kind not in ("image", "vector")):
        raise ValueError(f"diffusion models image or vector data; {info.name!r} is {info.kind} data")
    method = EDMDiffusion if cfg.parameterization == "edm" else Diffusion
    if nets:
        return method(cfg, info, nets["denoiser"])
    return method(cfg, info, denoiser_net(cfg, info, out_mult=2 if cfg.learned_variance else 1))


def denoiser_net(cfg, info: DataInfo, out_mult: int = 1) -> nn.Module:
    """The built-in net of `cfg.net` (auto: a U-Net for images, a residual MLP for vectors) with
    `out_mult` outputs per input channel; cfg carries `net`, `unet` and `mlp` (diffusion, flow matching)."""
    net_kind = cfg.net if cfg.net != "auto" else ("unet" if info.kind == "image" else "mlp")
    if net_kind == "unet":
        if info.kind != "image":
            raise ValueError(f"net 'unet' needs image data; {info.name!r} is {info.kind} data")
        c, h, _ = info.shape
        u = cfg.unet
        return UNet(c, c * out_mult, h, channels=u.channels, channel_mult=u.channel_mult,
                    num_res_blocks=u.num_res_blocks, attention_resolutions=u.attention_resolutions,
                    heads=u.heads, dropout=u.dropout, num_classes=info.num_classes)
    if info.kind != "vector":
        raise ValueError(f"net 'mlp' needs vector data; {info.name!r} is {info.kind} data (use the U-Net)")
    (d,) = info.shape
    m = cfg.mlp
    return MLPDenoiser(d, d * out_mult, width=m.width, depth=m.depth, num_classes=info.num_classes, dropout=m.dropout)


def net_contracts(cfg: DiffusionConfig, info: DataInfo) -> dict[str, NetContract]:
    """denoiser(x_t, t, y): x_t (B, *shape), t (B,) float timesteps 0..T-1, y (B,) labels 0..K
    (K = "no label", for classifier-free guidance) on labelled data, else None -> the
    `prediction` (B, *shape); with learned_variance (B, 2C, ...), the variance channels after."""
    conditional = info.num_classes is not None
    out = (info.shape[0] * (2 if cfg.learned_variance else 1), *info.shape[1:])
    y = dummy_labels(info, extra_class=True) if conditional else None
    ys = f"y (B,) in 0..{info.num_classes} ({info.num_classes} = no label)" if conditional else "y=None"
    if cfg.parameterization == "edm":
        t = EDM_TIME_SCALE * torch.tensor([cfg.sigma_min, cfg.sigma_max]).log() / 4
        what = f"t (B,) float = {EDM_TIME_SCALE} ln(sigma) / 4 -> F, D = c_skip x + c_out F"
    else:
        t = torch.tensor([0.0, cfg.timesteps - 1.0])
        what = f"t (B,) float in 0..{cfg.timesteps - 1} -> the {cfg.prediction} prediction"
    return {"denoiser": NetContract(f"denoiser(x_t, t, {ys}) with x_t (B, {dims(info.shape)}), {what} "
                                    f"(B, {dims(out)})",
                                    (dummy_data(info), t, y), (2, *out), conditional)}
