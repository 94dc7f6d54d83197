"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP").

A stack of affine couplings with alternating masks. Vectors (D,): couplings over alternating
halves of the features, MLP conditioners. Images (C, H, W): the multi-scale architecture of
the paper's section 3.6: at each scale `couplings` checkerboard couplings, a squeeze,
`couplings` channel couplings, then half of the channels are factored out as latents; the
last scale has couplings + 1 checkerboard couplings. Images enter through the logit transform
(section 4.1) and are uniformly dequantized in the loss (Theis et al. 2016), so `log_prob` is a
density on [-1, 1]^D over dequantized data (bits/dim: stablegen.metrics.likelihood).

`FlowMethod` (the objective, sampling with a temperature, data-dependent init and health
signals of any flow built from stablegen.nets.flow_layers) lives here; Glow reuses it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..base import Batch, DataInfo, ExportInput, ExportSpec, FamilyConfig, Method, NetContract, Phase, flow_contract
from ..metrics.likelihood import bits_per_dim, dequantize
from ..nets.flow_layers import (AffineCoupling, Chain, CouplingConvNet, FactorOut, Flatten,
                                LogitTransform, ScaleFn, Squeeze, actnorms, channel_mask,
                                checkerboard_mask, max_squeezes)
from ..nets.mlp import MLP


class RealNVPConfig(FamilyConfig):
    NETS = ("flow",)  # model.nets: a bijection flow(x) -> (z, logdet) with flow.inverse(z) -> x

    family: Literal["realnvp"] = "realnvp"
    couplings: int = Field(4, ge=1)  # vectors: pairs of couplings; images: per mask type per scale
    scales: int = Field(2, ge=0)  # images: squeeze + factor-out steps (H, W divisible by 2**scales)
    width: int = Field(64, ge=1)  # conditioner width: MLP hidden units or conv channels
    depth: int = Field(2, ge=0)  # conditioner depth: MLP hidden layers or residual blocks
    scale: ScaleFn = "tanh"  # bounded log-scale: tanh soft clamp, or Glow's sigmoid
    scale_bound: float = Field(2.0, gt=0)  # |log-scale| < bound per coupling (sigmoid: scale >= exp(-bound))
    logit_alpha: float | None = Field(0.05, gt=0, lt=0.5)  # images: logit preprocessing (None: off)
    dequantize: bool = True  # discrete images: uniform dequantization of each training batch


class FlowMethod(Method):
    """Maximum likelihood for a bijection `flow`: x (B, *shape) -> (z (B, D), log|det dz/dx|),
    with a standard normal prior on z.

    log p(x) = log N(z; 0, I) + log|det dz/dx|. The training loss is -log p(x) / D per sample
    (nats/dim) on a dequantized batch when `dequantize`; `sample` draws z ~ N(0, T^2 I) and
    inverts. `data_init` runs the flow once on a batch so every ActNorm initializes itself.
    """

    log_prob_is_discrete = False  # log_prob is a density over dequantized data

    def __init__(self, flow: nn.Module, info: DataInfo, dequantize: bool):
        super().__init__()
        self.flow, self.info = flow, info
        self.dim = math.prod(info.shape)
        self.dequantize = dequantize and info.levels is not None
        self._last_logdet: Tensor | None = None

    def _prepare(self, x: Tensor) -> Tensor:
        return dequantize(x, levels=self.info.levels) if self.dequantize else x

    def _log_prob_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, logdet = self.flow(x)  # (B, D), (B,)
        log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(dim=1)
        return log_pz + logdet, logdet

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density (nats) of x (B, *shape), shape (B,); images: dequantized x."""
        return self._log_prob_and_logdet(x)[0]

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        x = self._prepare(batch.x)
        log_p, logdet = self._log_prob_and_logdet(x)
        self._last_logdet = logdet.detach()
        logs = {"nll": -log_p.detach().mean()}
        if self.dequantize:
            logs["bpd"] = bits_per_dim(log_p.detach(), self.dim, levels=self.info.levels).mean()
        return -log_p / self.dim, logs

    def phases(self) -> list[Phase]:
        return [Phase("main", list(self.parameters()), self.loss)]

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0,
               **kw) -> Tensor:
        """n samples (n, *shape); z ~ N(0, temperature^2 I). Images are clamped to [-1, 1]."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        p = next(self.parameters())
        z = torch.randn(n, self.dim, generator=generator, device=p.device, dtype=p.dtype)
        x = self.flow.inverse(z * temperature)
        return x.clamp(-1, 1) if self.info.kind == "image" else x

    def export_net(self) -> ExportSpec:
        """The inverse flow: z (n, D) -> x (n, *shape), images clamped to [-1, 1] as in `sample`."""
        image = self.info.kind == "image"
        inputs = {"z": ExportInput(("n", self.dim), torch.float32, "latent codes, standard normal prior",
                                   f"torch.randn(n, {self.dim}, generator=g)")}
        notes = ["`stablegen sample --temperature T` multiplies z by T before the program (default 1)"]
        if image:
            notes.append("the program clamps images to [-1, 1]")

        def generate(z: Tensor) -> Tensor:
            x = self.flow.inverse(z)
            return x.clamp(-1, 1) if image else x

        return ExportSpec(self.flow, generate, inputs, "samples in data space", notes)

    @torch.no_grad()
    def data_init(self, batch: Batch) -> None:
        """Data-dependent ActNorm initialisation (Glow 3.1) on one (dequantized) batch; ActNorms
        already initialized (a reloaded checkpoint) are left alone."""
        layers = actnorms(self.flow)
        if not layers:
            return
        for layer in layers:
            layer.data_init_pending = True
        self.flow(self._prepare(batch.x))

    def health(self) -> dict[str, float]:
        """Range of the per-sample log-determinant (nats) on the last training batch."""
        if self._last_logdet is None:
            return {}
        ld = self._last_logdet
        return {"logdet_min": float(ld.min()), "logdet_max": float(ld.max())}


# ---- the RealNVP architecture --------------------------------------------------------------


def _coupling(cfg: RealNVPConfig, mask: Tensor) -> AffineCoupling:
    if mask.dim() == 1:
        d = mask.shape[0]
        net: nn.Module = MLP(d, 2 * d, width=cfg.width, depth=cfg.depth, act="relu")
    else:
        net = CouplingConvNet(mask.shape[0], width=cfg.width, blocks=cfg.depth)
    return AffineCoupling(mask, net, scale=cfg.scale, bound=cfg.scale_bound)


def _multiscale(cfg: RealNVPConfig, shape: tuple[int, int, int], scales_left: int) -> Chain:
    """One scale of RealNVP's multi-scale architecture, recursing into the kept half."""
    k = cfg.couplings
    if scales_left == 0:
        layers: list[nn.Module] = [_coupling(cfg, checkerboard_mask(shape, i % 2)) for i in range(k + 1)]
        return Chain(layers + [Flatten(shape)])
    layers = [_coupling(cfg, checkerboard_mask(shape, i % 2)) for i in range(k)]
    c, h, w = shape
    squeezed = (4 * c, h // 2, w // 2)
    layers.append(Squeeze())
    layers += [_coupling(cfg, channel_mask(squeezed, i % 2)) for i in range(k)]
    kept = (squeezed[0] // 2, h // 2, w // 2)
    layers.append(FactorOut(squeezed, _multiscale(cfg, kept, scales_left - 1)))
    return Chain(layers)


def build_realnvp_flow(cfg: RealNVPConfig, info: DataInfo) -> Chain:
    """The RealNVP bijection for `info.shape`: x (B, *shape) -> z (B, D)."""
    if info.kind == "vector":
        shape = info.shape
        layers: list[nn.Module] = [_coupling(cfg, channel_mask(shape, i % 2)) for i in range(2 * cfg.couplings)]
        return Chain(layers + [Flatten(shape)])
    if info.kind == "image":
        c, h, w = info.shape
        most = max_squeezes(h, w)
        if cfg.scales > most:
            raise ValueError(f"realnvp with model.scales={cfg.scales} squeezes the images {cfg.scales} times "
                             f"and needs H and W divisible by {2**cfg.scales}; the data are {h}x{w}: "
                             f"lower model.scales to {most}")
        body = _multiscale(cfg, (c, h, w), cfg.scales)
        if cfg.logit_alpha is None:
            return body
        return Chain([LogitTransform(cfg.logit_alpha), body])
    raise ValueError(f"realnvp models vector or image data, not {info.kind!r} data ({info.name})")


class RealNVP(FlowMethod):
    """RealNVP: a FlowMethod over the bijection of `build_realnvp_flow`."""


def build(cfg: RealNVPConfig, info: DataInfo, nets: dict[str, nn.Module] | None = None) -> RealNVP:
    flow = nets["flow"] if nets else build_realnvp_flow(cfg, info)
    return RealNVP(flow, info, cfg.dequantize)


def net_contracts(cfg: FamilyConfig, info: DataInfo) -> dict[str, NetContract]:
    """Any flow (RealNVP, Glow): flow(x) -> (z (B, D), log|det dz/dx| (B,)), flow.inverse(z) -> x."""
    return {"flow": flow_contract(info)}
