"""Glow (Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions").

One step of flow = actnorm (data-dependent init, section 3.1) -> invertible 1x1 convolution
with an LU-decomposed weight (section 3.2) -> affine coupling over the channel halves with a
sigmoid scale and a zero-initialized last conv (section 3.3). Images (C, H, W) use the
multi-scale architecture: `levels` times [squeeze, `steps` steps of flow, split], where the
split's factored-out half gets a learned prior N(mu(z1), sigma(z1)) (Glow's split2d). Vectors
(D,) use `steps` steps of actnorm -> invertible linear -> coupling with an MLP conditioner.

Training, log_prob (a density on [-1, 1]^D over dequantized data), temperature sampling and
the health signals are those of `FlowMethod` (stablegen.methods.realnvp); the trainer calls
`data_init(batch)` once before the first step to initialize the actnorms.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from ..base import DataInfo, FamilyConfig
from ..nets.flow_layers import (ActNorm, AffineCoupling, Chain, CouplingConvNet, FactorOut,
                                Flatten, InvertibleLinearLU, LogitTransform, ScaleFn, Squeeze,
                                channel_mask, max_squeezes, split_prior)
from ..nets.mlp import MLP
from .realnvp import FlowMethod


class GlowConfig(FamilyConfig):
    NETS = ("flow",)  # model.nets: a bijection flow(x) -> (z, logdet) with flow.inverse(z) -> x

    family: Literal["glow"] = "glow"
    levels: int = Field(2, ge=1)  # images: squeeze + steps + split blocks (H, W divisible by 2**levels)
    steps: int = Field(8, ge=1)  # steps of flow per level (images) or in total (vectors)
    width: int = Field(64, ge=1)  # conditioner width: MLP hidden units or conv channels
    depth: int = Field(1, ge=0)  # conditioner depth: MLP hidden layers or residual blocks
    scale: ScaleFn = "sigmoid"  # coupling log-scale: Glow's sigmoid, or the tanh soft clamp
    scale_bound: float = Field(3.0, gt=0)  # |log-scale| < bound per coupling (sigmoid: scale >= exp(-bound))
    learned_prior: bool = True  # images: learned N(mu(z1), sigma(z1)) prior of each split
    logit_alpha: float | None = Field(0.05, gt=0, lt=0.5)  # images: logit preprocessing (None: off)
    dequantize: bool = True  # discrete images: uniform dequantization of each training batch


def _step(cfg: GlowConfig, shape: tuple[int, ...]) -> list[nn.Module]:
    """One step of flow: actnorm, invertible 1x1 conv (or linear), affine coupling."""
    c, image = shape[0], len(shape) == 3
    if image:
        net: nn.Module = CouplingConvNet(c, width=cfg.width, blocks=cfg.depth)
    else:
        net = MLP(c, 2 * c, width=cfg.width, depth=cfg.depth, act="relu")
    coupling = AffineCoupling(channel_mask(shape, 0), net, scale=cfg.scale, bound=cfg.scale_bound)
    return [ActNorm(c, image), InvertibleLinearLU(c, image), coupling]


def _level(cfg: GlowConfig, shape: tuple[int, int, int], levels_left: int) -> Chain:
    """Squeeze, steps of flow, then split (recursing into the kept half) or flatten."""
    c, h, w = shape
    squeezed = (4 * c, h // 2, w // 2)
    layers: list[nn.Module] = [Squeeze()]
    for _ in range(cfg.steps):
        layers += _step(cfg, squeezed)
    if levels_left == 1:
        return Chain(layers + [Flatten(squeezed)])
    if cfg.learned_prior:
        layers.append(split_prior(squeezed[0]))
    kept = (squeezed[0] // 2, h // 2, w // 2)
    layers.append(FactorOut(squeezed, _level(cfg, kept, levels_left - 1)))
    return Chain(layers)


def build_glow_flow(cfg: GlowConfig, info: DataInfo) -> Chain:
    """The Glow bijection for `info.shape`: x (B, *shape) -> z (B, D)."""
    if info.kind == "vector":
        layers: list[nn.Module] = []
        for _ in range(cfg.steps):
            layers += _step(cfg, info.shape)
        return Chain(layers + [Flatten(info.shape)])
    if info.kind == "image":
        c, h, w = info.shape
        most = max_squeezes(h, w)
        if most == 0:
            raise ValueError(f"glow squeezes the images at least once and needs even H and W; the data are "
                             f"{h}x{w}: resize them to an even size (data.size) or use family=realnvp with "
                             f"model.scales=0")
        if cfg.levels > most:
            raise ValueError(f"glow with model.levels={cfg.levels} squeezes the images {cfg.levels} times "
                             f"and needs H and W divisible by {2**cfg.levels}; the data are {h}x{w}: "
                             f"lower model.levels to {most}")
        body = _level(cfg, (c, h, w), cfg.levels)
        if cfg.logit_alpha is None:
            return body
        return Chain([LogitTransform(cfg.logit_alpha), body])
    raise ValueError(f"glow models vector or image data, not {info.kind!r} data ({info.name})")


class Glow(FlowMethod):
    """Glow: a FlowMethod over the bijection of `build_glow_flow`."""


def build(cfg: GlowConfig, info: DataInfo, nets: dict[str, nn.Module] | None = None) -> Glow:
    flow = nets["flow"] if nets else build_glow_flow(cfg, info)
    return Glow(flow, info, cfg.dequantize)
