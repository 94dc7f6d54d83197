"""Generative adversarial networks (Goodfellow et al. 2014) and the stabilizers of the field.

Losses (per sample; d = critic output):
  ns     non-saturating   (Goodfellow et al. 2014)   D: sp(-d_r) + sp(d_f)       G: sp(-d_f)
  minimax  saturating, the game as first posed (Goodfellow et al. 2014, eq. 1)  D: as ns  G: -sp(d_f)
         (= log(1 - D(G(z))): its gradient vanishes once the critic is sure, Arjovsky & Bottou 2017)
  hinge  hinge            (Lim & Ye 2017; Miyato et al. 2018)  D: relu(1-d_r) + relu(1+d_f)  G: -d_f
  wgan   Wasserstein      (Arjovsky et al. 2017)     D: d_f - d_r                G: -d_f
  lsgan  least squares    (Mao et al. 2017)          D: (d_r-1)^2/2 + d_f^2/2    G: (d_f-1)^2/2
  relativistic  relativistic pairing, RpGAN (Jolicoeur-Martineau 2019; Huang et al. 2024, "The GAN
         is dead; long live the GAN! A Modern GAN Baseline", eq. 2)  D: sp(d_f - d_r)  G: sp(d_r - d_f),
         real and fake paired sample by sample. With R1 + R2 (r1_weight = r2_weight = gamma) and the
         cosine `gamma_schedule` it is R3GAN's loss (Huang et al. 2024, sec. 2.2-2.3).
Regularizers and tricks, each a switch of GanConfig:
  gradient penalty (WGAN-GP, Gulrajani et al. 2017), R1 / R2 (Mescheder et al. 2018) with the
  lazy interval of StyleGAN2 (Karras et al. 2020) and R3GAN's cosine decay of gamma, spectral
  norm (Miyato et al. 2018), one-sided label smoothing (Salimans et al. 2016), instance noise
  (Sønderby et al. 2017), minibatch stddev (Karras et al. 2018), PacGAN packing (Lin et al.
  2018), top-k generator updates (Sinha et al. 2020, "Top-k Training of GANs"), n_critic, TTUR (Heusel et al.
  2017: separate optim.g / optim.d learning rates), EMA generator (Yazıcı et al. 2019; the
  trainer's EMA over ema_module()), DiffAugment / ADA, and class-conditional G with a
  projection D (Miyato & Koyama 2018). Sampling may reject the latents G stretches most
  (Jacobian truncation, jacobian_truncation.py). Vector data may be standardized
  (`standardize`; LeCun et al. 1998, "Efficient BackProp", sec. 4.3): both nets then work in
  units of the data's per-feature std, as image GANs work on pixels in [-1, 1], so a learning
  rate means the same on data of any scale. The mlp nets may be weight-normalized
  (`weight_norm`; Salimans & Kingma 2016, nets/layers.maybe_wn) with the direction vectors
  shrunk, which makes the learning rate that a layer feels depend less on the configured one.
"""

from __future__ import annotations

import inspect
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from ..base import (Batch, DataInfo, ExportInput, ExportSpec, FamilyConfig, Method, NetContract, Phase, dims,
                    dummy_data, dummy_labels, dummy_latents)
from ..data.augment import ada_adjust, check_policy, diff_augment
from ..nets.dcgan import DCGANDiscriminator, DCGANGenerator
from ..nets.mlp import MLPCritic, MLPGenerator
from ..nets.resnet import ResNetDiscriminator, ResNetGenerator
from .jacobian_truncation import truncated_latents

GanLoss = Literal["ns", "minimax", "hinge", "wgan", "lsgan", "relativistic"]


class GanConfig(FamilyConfig):
    NETS = ("G", "D")  # model.nets: generator G(z, y), critic D(x, y)

    family: Literal["gan"] = "gan"
    net: Literal["mlp", "dcgan", "resnet"] = "mlp"  # built-in nets: mlp for vectors; dcgan or resnet for images >= 8 px (28 px: 7 -> 14 -> 28)
    z_dim: int = Field(64, ge=1)  # latent dimension
    latent: Literal["normal", "uniform"] = "normal"  # z ~ N(0, I) or uniform on [-1, 1]^z_dim
    width: int = Field(256, ge=1)  # hidden width (mlp) or base channels (conv nets)
    depth: int = Field(3, ge=1)  # hidden layers of the mlp nets
    loss: GanLoss = "hinge"  # adversarial loss
    n_critic: int = Field(1, ge=1)  # critic updates per generator update
    gp_weight: float = Field(0.0, ge=0)  # WGAN-GP lambda (10 in the paper)
    r1_weight: float = Field(0.0, ge=0)  # R1 gamma: penalty gamma/2 |grad D(real)|^2
    r2_weight: float = Field(0.0, ge=0)  # R2 gamma: the same on fakes
    r1_interval: int = Field(1, ge=1)  # lazy regularization: apply R1/R2 every k steps, scaled by k
    gamma_schedule: Literal["constant", "cosine"] = "constant"  # R1/R2 weights over training (R3GAN: cosine)
    gamma_end: float = Field(0.1, ge=0)  # cosine: the weights end at this share of r1_weight / r2_weight
    gamma_steps: int = Field(0, ge=0)  # cosine: steps from the start value to the end value (then constant)
    spectral_norm: bool = False  # spectral normalization of every critic layer
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # one-sided: real target 1 - s (ns loss)
    instance_noise: float = Field(0.0, ge=0)  # std of Gaussian noise added to critic inputs
    instance_noise_steps: int = Field(0, ge=0)  # anneal that std linearly to 0 (0 = constant)
    mbstd: bool = False  # minibatch standard-deviation feature in the critic
    pack: int = Field(1, ge=1)  # PacGAN: the critic judges `pack` samples at once
    topk: float = Field(1.0, gt=0, le=1)  # top-k: least share of fakes G learns from (1 = off)
    topk_decay: float = Field(0.99, gt=0, le=1)  # top-k: the share shrinks by this factor ...
    topk_interval: int = Field(100, ge=1)  # ... every this many steps, down to `topk`
    conditional: bool = False  # class-conditional G and projection D (needs data.labels)
    augment: Literal["none", "diffaugment", "ada"] = "none"  # differentiable augmentation
    augment_policy: str = "color,translation,cutout"  # DiffAugment / ADA ops
    ada_target: float = Field(0.6, gt=0, lt=1)  # ADA target of r_t = E[sign(D(real))] (lsgan: of D(real) - 0.5)
    ada_interval: int = Field(4, ge=1)  # steps between ADA updates of p
    ada_speed: int = Field(20_000, ge=1)  # images for p to move from 0 to 1
    truncation: Literal["none", "jacobian"] = "none"  # sampling: drop the latents G stretches most
    truncation_ratio: float = Field(100.0, gt=1)  # ... those whose volume element > ratio x median
    standardize: bool = False  # vector data: the nets see per-feature standardized data
    weight_norm: float = Field(0.0, ge=0, le=1)  # mlp nets: weight norm, v shrunk to this share (0 = off)

    @model_validator(mode="after")
    def _check(self) -> "GanConfig":
        if self.gamma_schedule == "cosine" and self.gamma_steps < 1:
            raise ValueError("model.gamma_schedule='cosine' needs model.gamma_steps >= 1 (the steps over which "
                             "the R1/R2 weights decay), got 0")
        if self.loss == "relativistic" and self.augment == "ada":
            raise ValueError("model.augment='ada' steers p by sign(D(real)), which the relativistic loss leaves "
                             "undetermined (it sees only D(real) - D(fake)); use augment='diffaugment'")
        return self


def gamma_factor(step: int, schedule: Literal["constant", "cosine"], end: float, steps: int) -> float:
    """Share of the configured R1/R2 weights in force at `step`. cosine (R3GAN, Huang et al.
    2024, their training presets): end + (1 - end) (1 + cos(pi min(step / steps, 1))) / 2, so
    1 at step 0 and `end` from `steps` on; the paper decays gamma 10x (end 0.1) over 20M images."""
    if schedule == "constant":
        return 1.0
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0)))


def pack_samples(x: Tensor, pack: int) -> Tensor:
    """PacGAN packing: (B, C, ...) -> (B / pack, pack * C, ...), concatenating consecutive
    samples along the channel (or feature) axis: sample i*pack + j lands in slot j of group i."""
    if pack == 1:
        return x
    b = x.shape[0]
    if b % pack:
        raise ValueError(f"batch size {b} is not divisible by model.pack={pack}")
    return x.reshape(b // pack, pack * x.shape[1], *x.shape[2:])


class GAN(Method):
    """A generator G(z, y) and a critic D(x, y) trained in two phases, d then g."""

    fast_sampling = True

    def __init__(self, cfg: GanConfig, info: DataInfo, generator: nn.Module, critic: nn.Module):
        super().__init__()
        self.cfg, self.info = cfg, info
        self.G, self.D = generator, critic
        self.policy = check_policy(cfg.augment_policy)
        # Buffers, so the guard's boosts and ADA's p are checkpointed with the weights.
        self.register_buffer("gp_weight", torch.tensor(cfg.gp_weight))
        self.register_buffer("r1_weight", torch.tensor(cfg.r1_weight))
        self.register_buffer("r2_weight", torch.tensor(cfg.r2_weight))
        self.register_buffer("ada_p", torch.tensor(0.0))
        self.register_buffer("ada_rt", torch.tensor(0.0))
        if cfg.standardize:  # set by data_init from the first batch; checkpointed with the weights
            self.register_buffer("data_mean", torch.zeros(info.shape))
            self.register_buffer("data_std", torch.ones(info.shape))
        self._last: dict[str, Tensor] = {}

    # ---- phases ------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        return [
            Phase("d", list(self.D.parameters()), self.d_loss, repeats=self.cfg.n_critic),
            Phase("g", list(self.G.parameters()), self.g_loss),
        ]

    def _labels(self, batch: Batch) -> Tensor | None:
        return batch.y if self.cfg.conditional else None

    def latent(self, b: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        """b latent codes, (b, z_dim), from the configured prior."""
        dev = self.device if device is None else device
        if self.cfg.latent == "uniform":
            return torch.rand(b, self.cfg.z_dim, generator=generator, device=dev) * 2 - 1
        return torch.randn(b, self.cfg.z_dim, generator=generator, device=dev)

    def _generate(self, b: int, y: Tensor | None) -> Tensor:
        return self._to_data(self.G(self.latent(b), y))

    # ---- standardization: the nets work in units of the data's per-feature std -----------
    def data_init(self, batch: Batch) -> None:
        if self.cfg.standardize:
            x = batch.x.flatten(1).float()
            std = x.std(dim=0, unbiased=False)
            self.data_mean.copy_(x.mean(dim=0))
            self.data_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))  # a constant feature keeps 1

    def _to_data(self, out: Tensor) -> Tensor:
        """The generator's output (standardized units) in data space."""
        return self.data_mean + self.data_std * out if self.cfg.standardize else out

    def _critic_input(self, x: Tensor, step: int) -> Tensor:
        """Standardization, augmentation, instance noise and packing: what the critic sees of x."""
        if self.cfg.standardize:
            x = (x - self.data_mean) / self.data_std
        if self.cfg.augment == "diffaugment":
            x = diff_augment(x, self.policy)
        elif self.cfg.augment == "ada":
            x = diff_augment(x, self.policy, p=self.ada_p)
        sigma = self.instance_noise_std(step)
        if sigma > 0:
            x = x + sigma * torch.randn_like(x)
        return pack_samples(x, self.cfg.pack)

    def instance_noise_std(self, step: int) -> float:
        c = self.cfg
        if c.instance_noise_steps == 0:
            return c.instance_noise
        return c.instance_noise * max(0.0, 1.0 - step / c.instance_noise_steps)

    def d_loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        c, y = self.cfg, self._labels(batch)
        y_packed = y if c.pack == 1 else None
        x_real = batch.x
        with torch.no_grad():
            x_fake = self._generate(x_real.shape[0], y)
        real_in, fake_in = self._critic_input(x_real, step), self._critic_input(x_fake, step)
        lazy = (c.r1_weight > 0 or c.r2_weight > 0) and step % c.r1_interval == 0
        if lazy and c.r1_weight > 0:
            real_in = real_in.detach().requires_grad_(True)
        if lazy and c.r2_weight > 0:
            fake_in = fake_in.detach().requires_grad_(True)
        d_real, d_fake = self.D(real_in, y_packed), self.D(fake_in, y_packed)  # (B',)
        loss = self.critic_loss(d_real, d_fake)
        logs = {"d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}
        if self.gp_weight > 0:
            gp = self.gradient_penalty(real_in.detach(), fake_in.detach(), y_packed)
            loss = loss + self.gp_weight * gp
            logs["gp"] = gp.detach().mean()
        decay = gamma_factor(step, c.gamma_schedule, c.gamma_end, c.gamma_steps)
        if lazy and self.r1_weight > 0:
            r1 = grad_norm_sq(d_real, real_in)
            loss = loss + c.r1_interval * decay * self.r1_weight / 2 * r1
            logs["r1"] = r1.detach().mean()
        if lazy and self.r2_weight > 0:
            r2 = grad_norm_sq(d_fake, fake_in)
            loss = loss + c.r1_interval * decay * self.r2_weight / 2 * r2
            logs["r2"] = r2.detach().mean()
        if lazy and c.gamma_schedule != "constant":
            logs["gamma_factor"] = torch.tensor(decay)
        self._last = {"d_real": d_real.detach(), "d_fake": d_fake.detach()}
        return loss, logs

    def critic_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        loss, s = self.cfg.loss, self.cfg.label_smoothing
        if loss in ("ns", "minimax"):
            return (1 - s) * F.softplus(-d_real) + s * F.softplus(d_real) + F.softplus(d_fake)
        if loss == "hinge":
            return F.relu(1 - d_real) + F.relu(1 + d_fake)
        if loss == "wgan":
            return d_fake - d_real
        if loss == "relativistic":  # pairs real i with fake i
            return F.softplus(d_fake - d_real)
        return 0.5 * (d_real - 1) ** 2 + 0.5 * d_fake**2  # lsgan

    def gradient_penalty(self, real: Tensor, fake: Tensor, y: Tensor | None) -> Tensor:
        """WGAN-GP (Gulrajani et al. 2017, eq. 3): (|grad D(x_hat)| - 1)^2 on random
        interpolates x_hat = eps x + (1 - eps) x~, per sample."""
        eps = torch.rand(real.shape[0], *[1] * (real.dim() - 1), device=real.device, dtype=real.dtype)
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        return (grad_norm_sq(self.D(x_hat, y), x_hat).add(1e-12).sqrt() - 1) ** 2

    def g_loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        y = self._labels(batch)
        b = batch.x.shape[0]
        y_packed = y if self.cfg.pack == 1 else None
        d_fake = self.D(self._critic_input(self._generate(b, y), step), y_packed)
        if self.cfg.loss == "relativistic":  # the reals' scores are constants to G
            with torch.no_grad():
                d_real = self.D(self._critic_input(batch.x, step), y_packed)
            loss = F.softplus(d_real - d_fake)
        elif self.cfg.loss == "ns":
            loss = F.softplus(-d_fake)
        elif self.cfg.loss == "minimax":
            loss = -F.softplus(d_fake)
        elif self.cfg.loss == "lsgan":
            loss = 0.5 * (d_fake - 1) ** 2
        else:  # hinge, wgan
            loss = -d_fake
        keep = self.topk_share(step)
        if keep < 1:  # the generator learns only from the fakes the critic rates most real
            k = max(1, math.ceil(keep * d_fake.shape[0]))
            return loss[d_fake.detach().topk(k).indices], {"topk": torch.tensor(keep)}
        return loss, {}

    def topk_share(self, step: int) -> float:
        """Top-k training (Sinha et al. 2020, Alg. 1): the share k / B of each generator batch
        that contributes to G's loss, gamma^(step // interval) floored at nu = `topk`."""
        c = self.cfg
        return 1.0 if c.topk >= 1 else max(c.topk, c.topk_decay ** (step // c.topk_interval))

    @property
    def needs_double_backward(self) -> bool:
        """Gradient penalties differentiate through a gradient (torch.compile cannot)."""
        return bool(self.gp_weight > 0 or self.r1_weight > 0 or self.r2_weight > 0)

    # ---- per-step bookkeeping, guard hooks ----------------------------------------------
    @property
    def decision_threshold(self) -> float:
        """The critic output between "real" and "fake": 0.5 between the least-squares targets
        0 and 1, else 0 (a logit or a score)."""
        return 0.5 if self.cfg.loss == "lsgan" else 0.0

    def on_step_end(self, step: int, logs: dict[str, Tensor]) -> None:
        if self.cfg.augment != "ada" or not self._last:
            return
        rt = torch.sign(self._last["d_real"] - self.decision_threshold).mean()
        self.ada_rt.mul_(0.9).add_(0.1 * rt)  # smoothed r_t
        if (step + 1) % self.cfg.ada_interval == 0:
            p = ada_adjust(float(self.ada_p), float(self.ada_rt), self.cfg.ada_target,
                           self._last["d_real"].numel() * self.cfg.pack, self.cfg.ada_interval, self.cfg.ada_speed)
            self.ada_p.fill_(p)

    def health(self) -> dict[str, float]:
        if not self._last:
            return {}
        d_real, d_fake = self._last["d_real"], self._last["d_fake"]
        threshold = self.decision_threshold
        if self.cfg.loss == "relativistic":  # only differences count: the share of pairs ranked right
            acc = (d_real > d_fake).float().mean()
        else:
            acc = 0.5 * ((d_real > threshold).float().mean() + (d_fake < threshold).float().mean())
        out = {"d_acc": float(acc), "d_gap": float(d_real.mean() - d_fake.mean())}
        if self.cfg.augment == "ada":
            out["ada_p"], out["ada_rt"] = float(self.ada_p), float(self.ada_rt)
        return out

    def regularization_boost(self, factor: float) -> bool:
        boosted = False
        for buf in (self.gp_weight, self.r1_weight, self.r2_weight):
            if buf > 0:
                buf.mul_(factor)
                boosted = True
        return boosted

    def ema_module(self) -> nn.Module:
        return self.G

    # ---- sampling ----------------------------------------------------------------------
    def monitor_sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        return self.sample(n, generator=generator, truncate=False)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, labels: Tensor | None = None,
               batch_size: int = 1000, truncate: bool | None = None, **kw) -> Tensor:
        """n samples; `truncate` (default: the recipe's model.truncation) applies Jacobian
        truncation, `truncate=False` gives the raw generator's samples."""
        if kw:
            raise TypeError(f"GAN sampling takes no options {sorted(kw)}; it has labels=, batch_size= and truncate=")
        truncate = self.cfg.truncation == "jacobian" if truncate is None else truncate
        if truncate and (why := truncation_refused(self.cfg)):
            raise ValueError(f"truncate=True: {why}")
        was_training = self.G.training
        self.G.eval()
        dev = self.device
        if truncate:
            z_all = truncated_latents(self.G, lambda b: self.latent(b, generator, device="cpu").to(dev), n,
                                      self.cfg.truncation_ratio)
        out = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            z = z_all[start : start + b] if truncate else self.latent(b, generator, device="cpu").to(dev)
            y = None
            if self.cfg.conditional:
                y = (labels[start : start + b] if labels is not None
                     else torch.randint(self.info.num_classes, (b,), generator=generator)).to(dev)
            out.append(self._to_data(self.G(z, y)).float())
        self.G.train(was_training)
        return torch.cat(out)

    def export_net(self) -> ExportSpec:
        """The raw generator in data space: z (n, z_dim) [, y (n,)] -> samples, as `sample(...,
        truncate=False)` returns them."""
        c = self.cfg
        prior = (f"torch.rand(n, {c.z_dim}, generator=g) * 2 - 1" if c.latent == "uniform"
                 else f"torch.randn(n, {c.z_dim}, generator=g)")
        inputs = {"z": ExportInput(("n", c.z_dim), torch.float32, f"latent codes, {c.latent} prior", prior)}
        if c.conditional:
            inputs["y"] = ExportInput(("n",), torch.int64, f"class labels 0..{self.info.num_classes - 1}",
                                      f"torch.randint({self.info.num_classes}, (n,), generator=g)")
        notes = ["the raw generator: Jacobian truncation (model.truncation) is not part of the program; "
                 "it reproduces `stablegen sample --no-truncate`"]
        extra = {}
        if c.standardize:
            notes.append("the program maps G's standardized output to data space: data_mean + data_std * G(z)")
            extra["output_transform"] = {"data_mean": self.data_mean.tolist(), "data_std": self.data_std.tolist()}

        def generate(*z_y: Tensor) -> Tensor:  # (z,) or (z, y)
            return self._to_data(self.G(*z_y)).float()

        batch = inspect.signature(self.sample).parameters["batch_size"].default  # sample() draws per batch
        return ExportSpec(self.G, generate, inputs, "samples in data space", notes, extra, draw_batch=batch)


def truncation_refused(cfg: GanConfig) -> str | None:
    """Why Jacobian truncation cannot be used with this GAN, or None."""
    if cfg.conditional:
        return "Jacobian truncation is for unconditional GANs; set model.conditional=false"
    if cfg.net != "mlp" and "G" not in cfg.nets:
        return (f"Jacobian truncation needs net=mlp (vector data): it takes the generator's Jacobian per "
                f"sample, too large for the image nets (net={cfg.net})")
    return None


def grad_norm_sq(out: Tensor, inp: Tensor) -> Tensor:
    """|d out.sum() / d inp|^2 per sample, with a graph for the penalty's own backward."""
    (g,) = torch.autograd.grad(out.sum(), inp, create_graph=True)
    return g.flatten(1).pow(2).sum(dim=1)


def build(cfg: GanConfig, info: DataInfo, nets: dict[str, nn.Module] | None = None) -> GAN:
    """A GAN with the user's `nets` (G, D) and built-in nets (model.net) for those not given."""
    nets = nets or {}
    if cfg.conditional and not info.num_classes:
        raise ValueError("model.conditional=true needs labelled data: set data.labels=true")
    if cfg.truncation != "none" and (why := truncation_refused(cfg)):
        raise ValueError(f"model.truncation={cfg.truncation!r}: {why}")
    if cfg.conditional and cfg.pack > 1:
        raise ValueError("model.pack > 1 cannot be combined with model.conditional=true")
    if cfg.augment != "none" and info.kind != "image":
        raise ValueError(f"model.augment={cfg.augment!r} needs image data; {info.name} is {info.kind}")
    if cfg.standardize and info.kind != "vector":
        raise ValueError(f"model.standardize=true is for vector data; {info.name} is {info.kind} "
                         "(images are already scaled to [-1, 1])")
    if len(nets) < 2:  # a built-in net to make
        if cfg.weight_norm and cfg.net != "mlp":
            raise ValueError(f"model.weight_norm is implemented for net=mlp, not net={cfg.net}; "
                             "set model.weight_norm=0")
        if cfg.weight_norm and cfg.spectral_norm:
            raise ValueError("model.weight_norm and model.spectral_norm both normalize the critic's weights; "
                             "choose one")
        if cfg.net == "mlp" and len(info.shape) != 1:
            raise ValueError(f"net=mlp needs vector data, got shape {info.shape}; use net=dcgan for images")
        if cfg.net != "mlp" and len(info.shape) != 3:
            raise ValueError(f"net={cfg.net} needs images (C, H, W), got shape {info.shape}; use net=mlp")
    g = nets["G"] if "G" in nets else _builtin_generator(cfg, info)
    d = nets["D"] if "D" in nets else _builtin_critic(cfg, info)
    return GAN(cfg, info, g, d)


def _builtin_generator(cfg: GanConfig, info: DataInfo) -> nn.Module:
    classes = info.num_classes if cfg.conditional else None
    if cfg.net == "mlp":
        return MLPGenerator(cfg.z_dim, math.prod(info.shape), cfg.width, cfg.depth, num_classes=classes,
                            weight_norm=cfg.weight_norm or None)
    net = DCGANGenerator if cfg.net == "dcgan" else ResNetGenerator
    return net(cfg.z_dim, info.shape, cfg.width, classes)


def _builtin_critic(cfg: GanConfig, info: DataInfo) -> nn.Module:
    classes = info.num_classes if cfg.conditional else None
    if cfg.net == "mlp":
        return MLPCritic(math.prod(info.shape) * cfg.pack, cfg.width, cfg.depth, spectral_norm=cfg.spectral_norm,
                         mbstd=cfg.mbstd, num_classes=classes, weight_norm=cfg.weight_norm or None)
    c, h, w = info.shape
    packed = (c * cfg.pack, h, w)
    if cfg.net == "dcgan":
        return DCGANDiscriminator(packed, cfg.width, cfg.spectral_norm, cfg.mbstd, classes)
    return ResNetDiscriminator(packed, cfg.width, cfg.spectral_norm, classes)


def net_contracts(cfg: GanConfig, info: DataInfo) -> dict[str, NetContract]:
    """G(z, y): z (B, z_dim) -> (B, *shape); D(x, y): x (B, pack * C, ...) -> (B,). y: class
    labels (B,) of a conditional GAN, else None."""
    y = dummy_labels(info) if cfg.conditional else None
    z = dummy_latents(cfg.z_dim)
    x = dummy_data(info)
    packed = x.repeat(1, cfg.pack, *[1] * (x.dim() - 2))  # (2, pack * C, ...): the critic sees packs
    ys = "y (B,)" if cfg.conditional else "y=None"
    image = info.kind == "image" and not cfg.standardize
    return {"G": NetContract(f"G(z, {ys}) with z (B, z_dim={cfg.z_dim}) -> samples (B, {dims(info.shape)})",
                             (z, y), (2, *info.shape), cfg.conditional, (-1.0, 1.0) if image else None),
            "D": NetContract(f"D(x, {ys}) with x (B, {dims(packed.shape[1:])}) -> scores (B,)",
                             (packed, y), (2,), cfg.conditional)}
