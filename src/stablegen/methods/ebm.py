"""Energy-based model trained by contrastive divergence with short-run Langevin dynamics.

Du & Mordatch 2019, "Implicit generation and generalization in energy-based models"
(IGEBM): p(x) ∝ exp(-E(x)); each training step draws negatives x- by K steps of Langevin
dynamics (mcmc/langevin.py: drift -lambda * clip(grad E), noise sigma, positions kept in a
box) started from a replay buffer of past negatives (95 %) or from uniform noise (5 %), writes
them back to the buffer, and minimizes per sample

    L = E(x+) - E(x-) + alpha * (E(x+)^2 + E(x-)^2)

(the contrastive-divergence estimate of the negative log-likelihood gradient, Hinton 2002,
with IGEBM's L2 regularization of the energies). The buffer is a registered tensor, so a
checkpoint holds it and a resumed run draws the very same negatives.

Sampling runs Langevin from noise (or from the buffer) for `sample_steps` steps; with
`sample_noise_end` < 1 the noise shrinks geometrically to that fraction over the chain (the
temperature sigma^2 / (2 lambda) falls: simulated annealing, Kirkpatrick et al. 1983), which
settles the samples into the energy's minima; `sample_step_end` does the same to the step
size. Sharp targets such as ring8 (std 0.01) need the cooling: docs/ebm.md has the figures.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..base import Batch, DataInfo, ExportInput, ExportSpec, FamilyConfig, Method, NetContract, Phase, dims, dummy_data
from ..mcmc import langevin
from ..nets.energy import EnergyConvNet, EnergyMLP
from ..nets.layers import Activation


class EbmConfig(FamilyConfig):
    NETS = ("energy",)  # model.nets: energy(x) -> E(x)

    family: Literal["ebm"] = "ebm"
    net: Literal["mlp", "conv"] = "mlp"  # built-in net: mlp for vectors, conv for images
    width: int = Field(128, ge=1)  # hidden width (mlp) or base channels (conv)
    depth: int = Field(3, ge=1)  # hidden layers of the mlp
    act: Activation = "silu"  # activation of the energy net (smooth: Langevin follows its gradient)
    spectral_norm: bool = False  # spectral normalization of every layer of the energy net
    alpha: float = Field(1.0, ge=0)  # L2 weight on the energies: alpha * (E(x+)^2 + E(x-)^2)
    langevin_steps: int = Field(60, ge=1)  # K: Langevin steps per training step
    step_size: float = Field(10.0, gt=0)  # lambda: drift coefficient of -grad E
    noise: float = Field(0.005, ge=0)  # sigma: std of the Gaussian noise of each Langevin step
    grad_clip: float | None = Field(0.03, gt=0)  # element-wise clip of grad E in the drift (None: off)
    buffer_size: int = Field(10_000, ge=1)  # replay buffer of past negatives
    reinit: float = Field(0.05, ge=0, le=1)  # share of chains restarted from noise each step
    box: float = Field(1.0, gt=0)  # noise is uniform on [-box, box]^D; positions stay in that box
    sample_steps: int = Field(200, ge=1)  # Langevin steps at sample time
    sample_noise_end: float = Field(1.0, gt=0, le=1)  # noise of the last sample step, as a fraction of `noise`
    sample_step_end: float = Field(1.0, gt=0, le=1)  # step size of the last sample step, as a fraction
    sample_init: Literal["noise", "buffer"] = "noise"  # where sampling chains start


def device_generator(device: torch.device, generator: torch.Generator | None = None) -> torch.Generator:
    """A generator on `device` seeded from `generator` (the CPU one the API passes), or, when
    None, from torch's global RNG, which the trainer checkpoints: resumed training draws the
    same numbers."""
    src = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(2**62, (1,), generator=generator, device=src))
    return torch.Generator(device).manual_seed(seed)


class EBM(Method):
    """An energy net E(x) -> (B,) trained by contrastive divergence; one phase, "main"."""

    def __init__(self, cfg: EbmConfig, info: DataInfo, energy: nn.Module):
        super().__init__()
        self.cfg, self.info, self.energy = cfg, info, energy
        self.register_buffer("replay", self._noise(cfg.buffer_size, None, torch.device("cpu")))  # (N, *shape)
        self._last: dict[str, Tensor] = {}

    # ---- Langevin ----------------------------------------------------------------------
    def _noise(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """n draws uniform on [-box, box]^shape."""
        u = torch.rand(n, *self.info.shape, generator=generator, device=device)
        return (2 * u - 1) * self.cfg.box

    def _logdensity(self, x: Tensor) -> Tensor:
        return -self.energy(x)

    def langevin(self, x: Tensor, steps: int, generator: torch.Generator, noise_end: float = 1.0,
                 step_end: float = 1.0) -> Tensor:
        """`steps` Langevin moves from x (B, ...); the noise and the step size decay geometrically
        from the configured values to `noise_end` and `step_end` times them at the last move."""
        c = self.cfg
        state = langevin.init(x, self._logdensity)
        grad_norm = torch.zeros((), device=x.device)
        for k in range(steps):
            t = k / max(steps - 1, 1)
            state, info = langevin.step(state, self._logdensity, c.step_size * step_end**t, generator,
                                        noise_std=c.noise * noise_end**t, grad_clip=c.grad_clip,
                                        bounds=(-c.box, c.box))
            grad_norm = info.grad_norm.mean()
        self._last["langevin_grad"] = grad_norm
        return state.position.detach()

    # ---- training ----------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        return [Phase("main", list(self.energy.parameters()), self.loss)]

    def negatives(self, b: int, generator: torch.Generator) -> Tensor:
        """b negatives: chains from the replay buffer (a `reinit` share restarted from noise),
        K Langevin steps, written back to the buffer. (b, ...)"""
        size = self.replay.shape[0]
        if b > size:
            raise ValueError(f"model.buffer_size={size} is smaller than the batch ({b}); raise buffer_size")
        dev = self.replay.device
        idx = torch.randperm(size, generator=generator, device=dev)[:b]  # (b,)
        fresh = torch.rand(b, generator=generator, device=dev) < self.cfg.reinit  # (b,)
        x0 = torch.where(fresh.view(b, *[1] * len(self.info.shape)), self._noise(b, generator, dev), self.replay[idx])
        x = self.langevin(x0, self.cfg.langevin_steps, generator)
        self.replay[idx] = x
        return x

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        x_pos = batch.x
        b = x_pos.shape[0]
        x_neg = self.negatives(b, device_generator(x_pos.device))
        e = self.energy(torch.cat([x_pos, x_neg]))  # (2B,)
        e_pos, e_neg = e[:b], e[b:]
        cd = e_pos - e_neg
        reg = e_pos**2 + e_neg**2
        self._last.update(e_pos=e_pos.detach(), e_neg=e_neg.detach())
        logs = {"cd": cd.detach().mean(), "reg": reg.detach().mean()}
        return cd + self.cfg.alpha * reg, logs

    def health(self) -> dict[str, float]:
        if "e_pos" not in self._last:
            return {}
        e_pos, e_neg = self._last["e_pos"], self._last["e_neg"]
        return {
            "energy_pos": float(e_pos.mean()),
            "energy_neg": float(e_neg.mean()),
            "energy_gap": float(e_neg.mean() - e_pos.mean()),
            "energy_abs_max": float(torch.cat([e_pos, e_neg]).abs().max()),
            "langevin_grad": float(self._last["langevin_grad"]),
        }

    # ---- sampling ----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, steps: int | None = None,
               noise_end: float | None = None, step_end: float | None = None,
               init: Literal["noise", "buffer"] | None = None, batch_size: int = 2000, **kw) -> Tensor:
        """n samples: `steps` Langevin moves from noise or the buffer, the noise and step size
        decaying to `noise_end` and `step_end` of their values (defaults: the sample_* config)."""
        if kw:
            raise TypeError(f"EBM sampling takes no options {sorted(kw)}; it has steps=, noise_end=, step_end=, "
                            f"init=, batch_size=")
        c = self.cfg
        steps = c.sample_steps if steps is None else steps
        noise_end = c.sample_noise_end if noise_end is None else noise_end
        step_end = c.sample_step_end if step_end is None else step_end
        init = c.sample_init if init is None else init
        if init not in ("noise", "buffer"):
            raise ValueError(f"unknown init {init!r}; choose 'noise' or 'buffer'")
        if steps < 0 or not (0 < noise_end <= 1 and 0 < step_end <= 1):
            raise ValueError(f"need steps >= 0, 0 < noise_end <= 1 and 0 < step_end <= 1; got steps={steps}, "
                             f"noise_end={noise_end}, step_end={step_end}")
        dev = self.device
        g = device_generator(dev, generator)
        if init == "buffer":  # distinct buffer entries while they last
            size = self.replay.shape[0]
            order = torch.cat([torch.randperm(size, generator=g, device=dev) for _ in range(-(-n // size))])[:n]
        out = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            x0 = self._noise(b, g, dev) if init == "noise" else self.replay[order[start : start + b]]
            out.append(self.langevin(x0, steps, g, noise_end, step_end) if steps else x0)
        return torch.cat(out)

    def export_net(self) -> ExportSpec:
        """The energy: x (n, *shape) -> E(x) (n,); Langevin sampling is not exported."""
        inputs = {"x": ExportInput(("n", *self.info.shape), torch.float32, "points in data space")}
        notes = ["no sampler is exported: `stablegen sample` runs Langevin dynamics on E with the settings "
                 "model.sample_*, model.step_size, model.noise, model.grad_clip and model.box of this file"]
        return ExportSpec(self.energy, self.energy, inputs, "the energy E(x); p(x) is proportional to exp(-E(x))",
                          notes)


def build(cfg: EbmConfig, info: DataInfo, nets: dict[str, nn.Module] | None = None) -> EBM:
    if nets:
        return EBM(cfg, info, nets["energy"])
    if cfg.net == "mlp":
        if len(info.shape) != 1:
            raise ValueError(f"model.net=mlp needs vector data, got shape {info.shape}; use model.net=conv for images")
        net: nn.Module = EnergyMLP(math.prod(info.shape), cfg.width, cfg.depth, cfg.act, cfg.spectral_norm)
    else:
        if len(info.shape) != 3:
            raise ValueError(f"model.net=conv needs images (C, H, W), got shape {info.shape}; use model.net=mlp")
        net = EnergyConvNet(info.shape, cfg.width, cfg.act, cfg.spectral_norm)
    return EBM(cfg, info, net)


def net_contracts(cfg: EbmConfig, info: DataInfo) -> dict[str, NetContract]:
    """energy(x): x (B, *shape) -> E(x) (B,); Langevin follows its gradient, so it should be smooth."""
    return {"energy": NetContract(f"energy(x) with x (B, {dims(info.shape)}) -> energies (B,)",
                                  (dummy_data(info),), (2,))}
