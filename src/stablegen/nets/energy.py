"""Energy nets: x -> one scalar per sample, for Langevin dynamics to follow its gradient.

SiLU (Ramachandran et al. 2017), smooth in x, is the usual choice for images (Du & Mordatch
2019; Nijkamp et al. 2019, "Learning non-convergent non-persistent short-run MCMC toward
energy-based model"); a piecewise-linear LeakyReLU net forms the narrow wells of sharp 2-D
mixtures much faster (docs/ebm.md)."""

from __future__ import annotations

import math

from torch import Tensor, nn

from .layers import Activation, activation, maybe_sn
from .mlp import MLP


class EnergyMLP(nn.Module):
    """x (B, D) -> E(x) (B,): an MLP with `depth` hidden layers of `width`."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3, act: Activation = "silu",
                 spectral_norm: bool = False):
        super().__init__()
        self.net = MLP(dim, 1, width, depth, act, spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


class EnergyConvNet(nn.Module):
    """x (B, C, H, W) -> E(x) (B,): a 3x3 conv, then stride-2 4x4 convs halving the resolution
    (doubling the channels) down to 4x4 or below, then a linear head."""

    def __init__(self, shape: tuple[int, int, int], base: int = 32, act: Activation = "silu",
                 spectral_norm: bool = False):
        super().__init__()
        c, h, w = shape
        if h < 4 or w < 4:
            raise ValueError(f"EnergyConvNet needs images of at least 4x4, got {h}x{w}")
        downs = max(0, math.ceil(math.log2(max(h, w) / 4)))
        layers: list[nn.Module] = [maybe_sn(nn.Conv2d(c, base, 3, 1, 1), spectral_norm), activation(act)]
        ch = base
        for _ in range(downs):
            layers += [maybe_sn(nn.Conv2d(ch, ch * 2, 4, 2, 1), spectral_norm), activation(act)]
            ch, h, w = ch * 2, h // 2, w // 2
        layers += [nn.Flatten(), maybe_sn(nn.Linear(ch * h * w, 1), spectral_norm)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)
