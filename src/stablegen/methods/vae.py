"""Variational autoencoders (Kingma & Welling 2014; Rezende et al. 2014) and their stabilizers.

Objective, per sample (Gaussian posterior q(z|x) = N(mu, diag(sigma^2)), prior N(0, I)):
    loss = -log p(x|z) + w(step) * KL(q(z|x) || p(z)),   z = mu + sigma * eps
with the switches of VAEConfig:
  beta             w = beta after annealing (beta-VAE, Higgins et al. 2017)
  anneal=linear    w ramps 0 -> beta over anneal_steps (Bowman et al. 2016, "KL cost annealing")
  anneal=cyclical  `cycles` ramps over anneal_steps, each rising over the first `ratio` of its
                   cycle and holding at beta for the rest (Fu et al. 2019, "Cyclical Annealing
                   Schedule"; 4 cycles, R = 0.5); beta from anneal_steps on
  free_bits        per-dimension KL floor lambda: sum_j max(lambda, E_batch KL_j) (Kingma et al.
                   2016, "Improved Variational Inference with Inverse Autoregressive Flow", eq. 17)
Decoders (likelihoods p(x|z)):
  gaussian         N(mean, sigma^2) per dimension, sigma predicted (or fixed by obs_std); a
                   density: on discrete data train and evaluate on dequantized x (Theis et al. 2016)
  bernoulli        logits per dimension on targets (x + 1) / 2
  logistic         discretized logistic over the data's grey levels (Salimans et al. 2017,
                   "PixelCNN++", eq. 2; one component): probabilities of the levels themselves
log_prob is the importance-weighted bound (Burda et al. 2016, "Importance Weighted
Autoencoders", eq. 8) with k samples: log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x).
health() counts active units (Burda et al. 2016, section 5.2): A_u = Cov_x(E_q[u]) > 0.01,
on the last training batch; falling counts signal posterior collapse.
"""

from __future__ import annotations

import abc
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..base import (Batch, DataInfo, ExportInput, ExportSpec, FamilyConfig, Method, NetContract, Phase, dims,
                    dummy_data, dummy_latents)
from ..metrics.likelihood import dequantize
from ..nets.layers import Activation
from ..nets.vae_nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from .diffusion_samplers import randn

Anneal = Literal["none", "linear", "cyclical"]
ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016: a unit is active when Cov_x(E_q[u]) > 0.01
_LOG_2PI = math.log(2 * math.pi)


class LatentOptions(FamilyConfig):
    """Options of the ELBO shared by the VAE and the sequence VAE."""

    z_dim: int = Field(16, ge=1)  # latent dimension
    beta: float = Field(1.0, ge=0)  # weight of the KL term after annealing (beta-VAE)
    anneal: Anneal = "linear"  # KL weight schedule: none, linear warm-up, cyclical (Fu et al. 2019)
    anneal_steps: int = Field(1000, ge=1)  # steps of the linear ramp / span of all cycles
    cycles: int = Field(4, ge=1)  # cyclical: number of cycles within anneal_steps
    cycle_ratio: float = Field(0.5, gt=0, le=1)  # cyclical: share of each cycle spent ramping up
    free_bits: float = Field(0.0, ge=0)  # KL floor per latent dimension, nats (0 = off)
    iwae_k: int = Field(100, ge=1)  # importance samples of the log_prob bound
    iwae_chunk: int = Field(50, ge=1)  # importance samples decoded per pass (bounds memory)


# ---- pure pieces of the objective --------------------------------------------------------


def kl_weight(step: int, beta: float, anneal: Anneal, anneal_steps: int, cycles: int = 4,
              ratio: float = 0.5) -> float:
    """The KL weight at training step `step` (0-based).

    linear: beta * min(1, step / anneal_steps). cyclical (Fu et al. 2019): the span
    [0, anneal_steps) is cut into `cycles` periods; in each, the weight rises linearly from 0
    to beta over the first `ratio` of the period and stays at beta for the rest; beta after.
    """
    if anneal == "none" or step >= anneal_steps:
        return beta
    if anneal == "linear":
        return beta * step / anneal_steps
    if anneal == "cyclical":
        period = anneal_steps / cycles
        tau = (step % period) / period  # position within the cycle, [0, 1)
        return beta * min(1.0, tau / ratio)
    raise ValueError(f"unknown anneal {anneal!r}; choose none, linear or cyclical")


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per dimension: (B, Z) -> (B, Z)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def free_bits_kl(kl: Tensor, floor: float) -> Tensor:
    """Per-sample KL term with a per-dimension floor (Kingma et al. 2016, eq. 17): (B, Z) -> (B,).

    A dimension whose batch-mean KL is below `floor` contributes the constant `floor` (no
    gradient); the batch mean of the result is sum_j max(floor, mean_batch KL_j).
    """
    if floor <= 0:
        return kl.sum(dim=1)
    above = kl.detach().mean(dim=0) >= floor  # (Z,)
    return torch.where(above, kl, torch.full_like(kl, floor)).sum(dim=1)


def active_units(mu: Tensor, threshold: float = ACTIVE_THRESHOLD) -> Tensor:
    """Number of latent units u with Cov_x(E_q[u]) > threshold; mu (B, Z) -> scalar count."""
    if mu.shape[0] < 2:
        return torch.zeros((), device=mu.device)
    return (mu.float().var(dim=0) > threshold).sum()


def gaussian_log_lik(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """sum over non-batch dims of log N(x; mean, exp(log_scale)^2): (B, ...) -> (B,)."""
    lp = -0.5 * ((x - mean) * torch.exp(-log_scale)).square() - log_scale - 0.5 * _LOG_2PI
    return lp.flatten(1).sum(dim=1)


def bernoulli_log_lik(x: Tensor, logits: Tensor) -> Tensor:
    """sum of log Bernoulli((x + 1) / 2; sigmoid(logits)) for x in [-1, 1]: (B, ...) -> (B,)."""
    target = (x + 1) / 2
    return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(dim=1)


def discretized_logistic_log_lik(x: Tensor, mean: Tensor, log_scale: Tensor, levels: int) -> Tensor:
    """log P(level of x) under a logistic(mean, exp(log_scale)) discretized into `levels` bins
    of width 2 / (levels - 1) centred on the levels of [-1, 1] (Salimans et al. 2017, eq. 2);
    the end bins extend to -inf / +inf. (B, ...) -> (B,).

    Middle bins use log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b)
    + log(1 - exp(b - a)), exact and stable even for far-off means.
    """
    half = 1.0 / (levels - 1)
    inv_s = torch.exp(-log_scale)
    plus = (x - mean + half) * inv_s  # upper bin edge, standardized
    minus = (x - mean - half) * inv_s  # lower bin edge
    log_cdf_plus = F.logsigmoid(plus)  # the lowest level: P = sigmoid(plus)
    log_sf_minus = F.logsigmoid(-minus)  # the highest level: P = 1 - sigmoid(minus)
    width = (2 * half) * inv_s  # plus - minus > 0
    log_mid = F.logsigmoid(plus) + F.logsigmoid(-minus) + torch.log(-torch.expm1(-width))
    edge = 1.0 - half / 2  # x within half a bin of +-1 is an end level
    lp = torch.where(x < -edge, log_cdf_plus, torch.where(x > edge, log_sf_minus, log_mid))
    return lp.flatten(1).sum(dim=1)


def iwae_bound(log_w: Tensor) -> Tensor:
    """log (1/k) sum_i exp(log_w_i) from log-weights (k, B) -> (B,) (Burda et al. 2016, eq. 8)."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


# ---- the machinery shared by every Gaussian-posterior VAE --------------------------------


class LatentVariableMethod(Method):
    """A Gaussian-posterior VAE: ELBO training with annealing and free bits, the IWAE bound as
    log_prob, active units as health. Subclasses give `encode` and `decoder_log_lik`."""

    def __init__(self, opts: LatentOptions, info: DataInfo):
        super().__init__()
        self.opts, self.info = opts, info
        self._last_mu: Tensor | None = None  # posterior means of the last training batch
        self._last_kl: Tensor | None = None  # its mean KL (nats, summed over dimensions)

    @abc.abstractmethod
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, ...) -> posterior (mu, logvar), each (B, z_dim)."""

    @abc.abstractmethod
    def decoder_log_lik(self, x: Tensor, z: Tensor, *, train: bool) -> Tensor:
        """log p(x | z) per sample: x (B, ...), z (B, z_dim) -> (B,). `train` turns on
        training-only corruption of the decoder's inputs (word dropout)."""

    def train_input(self, x: Tensor) -> Tensor:
        """The data the objective sees (dequantization hooks in here); default: x."""
        return x

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        o = self.opts
        x = self.train_input(batch.x)
        mu, logvar = self.encode(x)  # (B, Z) each
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = -self.decoder_log_lik(x, z, train=True)  # (B,)
        kl = gaussian_kl(mu, logvar)  # (B, Z)
        w = kl_weight(step, o.beta, o.anneal, o.anneal_steps, o.cycles, o.cycle_ratio)
        loss = rec + w * free_bits_kl(kl, o.free_bits)
        kl_sum = kl.detach().sum(dim=1).mean()
        self._last_mu, self._last_kl = mu.detach(), kl_sum
        logs = {"rec": rec.detach().mean(), "kl": kl_sum, "kl_weight": torch.tensor(w),
                "elbo": -(rec.detach().mean() + kl_sum)}
        return loss, logs

    def phases(self) -> list[Phase]:
        return [Phase("main", list(self.parameters()), self.loss)]

    def elbo(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Single-sample ELBO with the analytic KL, per sample (B,); no annealing, no floor."""
        mu, logvar = self.encode(x)
        eps = randn(tuple(mu.shape), generator, mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decoder_log_lik(x, z, train=False) - gaussian_kl(mu, logvar).sum(dim=1)

    @torch.no_grad()
    def log_weights(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """Importance log-weights log p(x, z_i) - log q(z_i | x), z_i ~ q(z|x): (k, B).

        Decodes `iwae_chunk` importance samples per pass, so memory is O(iwae_chunk * B).
        """
        mu, logvar = self.encode(x)  # (B, Z)
        std = torch.exp(0.5 * logvar)
        b, zd = mu.shape
        out = []
        for start in range(0, k, self.opts.iwae_chunk):
            m = min(self.opts.iwae_chunk, k - start)
            eps = randn((m, b, zd), generator, mu.device)  # drawn on the generator's device
            z = mu + std * eps  # (m, B, Z)
            log_q = (-0.5 * eps.square() - 0.5 * logvar - 0.5 * _LOG_2PI).sum(dim=2)  # (m, B)
            log_pz = (-0.5 * z.square() - 0.5 * _LOG_2PI).sum(dim=2)  # (m, B)
            x_rep = x.unsqueeze(0).expand(m, *x.shape).reshape(m * b, *x.shape[1:])
            log_px = self.decoder_log_lik(x_rep, z.reshape(m * b, zd), train=False).view(m, b)
            out.append(log_px + log_pz - log_q)
        return torch.cat(out, dim=0)

    def log_prob(self, x: Tensor, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The IWAE lower bound on log p(x) with k importance samples (default iwae_k), (B,).

        See `log_prob_is_discrete` for the bits_per_dim flag that applies. No gradient:
        this is an evaluation bound; training uses the (annealed) ELBO.
        """
        return iwae_bound(self.log_weights(x, k or self.opts.iwae_k, generator))

    def health(self) -> dict[str, float]:
        """Active units (Burda et al. 2016) and mean KL on the last training batch."""
        if self._last_mu is None:
            return {}
        active = float(active_units(self._last_mu))
        return {"active_units": active, "active_fraction": active / self._last_mu.shape[1],
                "kl": float(self._last_kl)}


# ---- the image / vector VAE --------------------------------------------------------------


Decoder = Literal["auto", "gaussian", "bernoulli", "logistic"]


class VaeConfig(LatentOptions):
    NETS = ("encoder", "decoder")  # model.nets: encoder(x) -> (mu, logvar), decoder(z) -> likelihood parameters

    family: Literal["vae"] = "vae"
    net: Literal["mlp", "conv"] = "mlp"  # built-in nets: mlp for vectors and small images; conv for images
    width: int = Field(256, ge=1)  # hidden width (mlp) or base channels (conv)
    depth: int = Field(2, ge=1)  # hidden layers of the mlp encoder and decoder
    act: Activation = "relu"  # hidden activation
    decoder: Decoder = "auto"  # likelihood; auto = logistic on discrete data (levels), else gaussian
    obs_std: float | None = Field(None, gt=0)  # gaussian: fixed std; None = predicted per dimension
    min_log_scale: float = -5.0  # floor of the predicted log std / log scale (gaussian, logistic)
    dequantize: bool = True  # gaussian on discrete data: train on uniformly dequantized x
    sample_noise: bool = False  # sample(): draw from p(x|z) instead of returning its mean


def resolve_decoder(decoder: Decoder, info: DataInfo) -> Literal["gaussian", "bernoulli", "logistic"]:
    """The likelihood to use: `auto` picks logistic when the data has grey levels."""
    if decoder == "auto":
        return "logistic" if info.levels else "gaussian"
    if decoder == "logistic" and not info.levels:
        raise ValueError(f"decoder=logistic needs discrete data with known grey levels; {info.name!r} "
                         "has none (DataInfo.levels); use decoder=gaussian")
    return decoder


class VAE(LatentVariableMethod):
    """Encoder x -> (mu, logvar), decoder z -> likelihood parameters (B, P, *shape)."""

    fast_sampling = True  # one decoder pass: the guard may watch sample diversity

    def __init__(self, cfg: VaeConfig, info: DataInfo, encoder: nn.Module, decoder: nn.Module):
        super().__init__(cfg, info)
        self.cfg = cfg
        self.encoder, self.decoder = encoder, decoder
        self.likelihood = resolve_decoder(cfg.decoder, info)
        self.log_prob_is_discrete = self.likelihood != "gaussian"

    @staticmethod
    def params_per_dim(likelihood: str, obs_std: float | None) -> int:
        """How many decoder outputs each data dimension needs."""
        return 2 if likelihood == "logistic" or (likelihood == "gaussian" and obs_std is None) else 1

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder output (B, P, *shape) -> (location, log scale) each (B, *shape)."""
        loc = out[:, 0]
        if self.likelihood == "gaussian" and self.cfg.obs_std is not None:
            return loc, torch.full_like(loc, math.log(self.cfg.obs_std))
        if self.likelihood == "bernoulli":
            return loc, torch.zeros_like(loc)
        return loc, out[:, 1].clamp(min=self.cfg.min_log_scale)

    def decoder_log_lik(self, x: Tensor, z: Tensor, *, train: bool) -> Tensor:
        loc, log_scale = self._split(self.decoder(z))
        if self.likelihood == "gaussian":
            return gaussian_log_lik(x, loc, log_scale)
        if self.likelihood == "bernoulli":
            return bernoulli_log_lik(x, loc)
        return discretized_logistic_log_lik(x, loc, log_scale, int(self.info.levels))  # type: ignore[arg-type]

    def train_input(self, x: Tensor) -> Tensor:
        if self.likelihood == "gaussian" and self.cfg.dequantize and self.info.levels:
            return dequantize(x, None, self.info.levels)
        return x

    def log_prob(self, x: Tensor, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """IWAE bound on log p(x), (B,), k importance samples (default iwae_k).

        gaussian decoder: a density over x in [-1, 1]^D; on discrete data pass dequantized x
          (stablegen.metrics.likelihood.dequantize) and use bits_per_dim(..., continuous=True).
        logistic / bernoulli: log-probability of the levels (binary values) themselves:
          bits_per_dim(..., continuous=False). `log_prob_is_discrete` says which applies.
        """
        if self.likelihood == "bernoulli" and not ((x == -1) | (x == 1)).all():
            raise ValueError("a Bernoulli decoder gives probabilities of binary data (values -1 and 1) "
                             "only; for grey levels use decoder=logistic")
        return super().log_prob(x, k, generator)

    def _mean(self, out: Tensor) -> Tensor:
        """The mean of p(x|z) in data space, (B, *shape)."""
        loc, _ = self._split(out)
        if self.likelihood == "bernoulli":
            return torch.sigmoid(loc) * 2 - 1
        return loc.clamp(-1, 1) if self.likelihood == "logistic" else loc

    def _draw(self, out: Tensor, generator: torch.Generator | None) -> Tensor:
        """One draw from p(x|z), (B, *shape)."""
        loc, log_scale = self._split(out)
        if self.likelihood == "gaussian":
            return loc + log_scale.exp() * randn(tuple(loc.shape), generator, loc.device)
        on = generator.device if generator is not None else loc.device
        u = torch.rand(loc.shape, generator=generator, device=on).to(loc.device)
        if self.likelihood == "bernoulli":
            return (u < torch.sigmoid(loc)).to(loc.dtype) * 2 - 1
        u = u.clamp(1e-5, 1 - 1e-5)
        x = (loc + log_scale.exp() * (u.log() - (-u).log1p())).clamp(-1, 1)  # logistic draw
        n = int(self.info.levels) - 1  # type: ignore[arg-type]
        return ((x + 1) / 2 * n).round() / n * 2 - 1  # snapped to the grey levels

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, noise: bool | None = None,
               **kw) -> Tensor:
        """n samples (n, *shape): decoder means of z ~ N(0, I), or draws when noise is True
        (default: cfg.sample_noise)."""
        z = randn((n, self.cfg.z_dim), generator, self.device)
        out = self.decoder(z)
        return self._draw(out, generator) if (self.cfg.sample_noise if noise is None else noise) else self._mean(out)

    def export_net(self) -> ExportSpec:
        """The decoder mean of p(x|z): z (n, z_dim) -> (n, *shape), as `sample(noise=False)`."""
        z_dim = self.cfg.z_dim
        inputs = {"z": ExportInput(("n", z_dim), torch.float32, "latent codes, standard normal prior",
                                   f"torch.randn(n, {z_dim}, generator=g)")}
        notes = [f"the program returns the mean of the {self.likelihood} decoder p(x|z)"]
        if self.cfg.sample_noise:
            notes.append("the run samples with model.sample_noise=true: `stablegen sample` draws from p(x|z) "
                         "around that mean, which the program does not do")
        extra = {"likelihood": self.likelihood, "decoder_output": "(n, params, *shape): location, then log scale "
                 "when params = 2; model.safetensors holds this decoder"}
        return ExportSpec(self.decoder, lambda z: self._mean(self.decoder(z)), inputs,
                          "samples in data space: the decoder mean", notes, extra)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder mean at the posterior mean: x (B, *shape) -> (B, *shape)."""
        mu, _ = self.encode(x)
        return self._mean(self.decoder(mu))


def build(cfg: VaeConfig, info: DataInfo, nets: dict[str, nn.Module] | None = None) -> VAE:
    """A VAE with the user's `nets` (encoder, decoder) and built-in MLP or conv nets for those not
    given; built-in nets model vectors and images, the user's any real-valued data."""
    nets = nets or {}
    if info.kind == "tokens" or (len(nets) < 2 and info.kind not in ("vector", "image")):
        raise ValueError(f"the vae family's built-in nets model vectors and images; {info.name!r} is {info.kind} "
                         "data (use family: seqvae for sequences)")
    likelihood = resolve_decoder(cfg.decoder, info)
    params = VAE.params_per_dim(likelihood, cfg.obs_std)
    if cfg.net == "conv" and len(nets) < 2 and info.kind != "image":
        raise ValueError(f"net=conv needs image data (C, H, W); {info.name!r} has shape {info.shape}; use net=mlp")
    if "encoder" in nets:
        enc = nets["encoder"]
    elif cfg.net == "conv":
        enc = ConvEncoder((info.shape[0], info.shape[1], info.shape[2]), 2 * cfg.z_dim, cfg.width, cfg.act)
    else:
        enc = MLPEncoder(info.shape, 2 * cfg.z_dim, cfg.width, cfg.depth, cfg.act)
    if "decoder" in nets:
        dec = nets["decoder"]
    elif cfg.net == "conv":
        dec = ConvDecoder(cfg.z_dim, (info.shape[0], info.shape[1], info.shape[2]), params, cfg.width, cfg.act)
    else:
        dec = MLPDecoder(cfg.z_dim, info.shape, params, cfg.width, cfg.depth, cfg.act)
    return VAE(cfg, info, enc, dec)


def net_contracts(cfg: VaeConfig, info: DataInfo) -> dict[str, NetContract]:
    """encoder(x): x (B, *shape) -> (B, 2 z_dim), the posterior's mu then logvar; decoder(z):
    z (B, z_dim) -> (B, P, *shape), P likelihood parameters per data dimension (location, then
    log scale when P = 2)."""
    likelihood = resolve_decoder(cfg.decoder, info)
    p = VAE.params_per_dim(likelihood, cfg.obs_std)
    z = dummy_latents(cfg.z_dim)
    what = "location" if p == 1 else "location, log scale"
    return {"encoder": NetContract(f"encoder(x) with x (B, {dims(info.shape)}) -> (B, 2 z_dim = {2 * cfg.z_dim}): "
                                   "mu, then logvar", (dummy_data(info),), (2, 2 * cfg.z_dim)),
            "decoder": NetContract(f"decoder(z) with z (B, z_dim={cfg.z_dim}) -> (B, {p}, {dims(info.shape)}): "
                                   f"the {likelihood} likelihood's {what} per dimension", (z,),
                                   (2, p, *info.shape))}
