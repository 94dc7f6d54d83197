"""A normalizing flow of your own for stablegen's flow families (docs/custom.md)."""

import torch
from torch import nn

from stablegen import DataInfo


class Coupling(nn.Module):
    """An affine coupling (Dinh et al. 2017): the features where `mask` is 1 set a scale and a
    shift of the others; it starts as the identity."""

    def __init__(self, mask: torch.Tensor, width: int):
        super().__init__()
        self.register_buffer("mask", mask)
        d = mask.numel()
        self.net = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, 2 * d))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, kept):
        log_s, shift = self.net(kept).chunk(2, dim=1)
        return torch.tanh(log_s) * (1 - self.mask), shift * (1 - self.mask)

    def forward(self, x):
        log_s, shift = self._scale_shift(x * self.mask)
        return x * log_s.exp() + shift, log_s.sum(dim=1)

    def inverse(self, z):
        log_s, shift = self._scale_shift(z * self.mask)
        return (z - shift) * (-log_s).exp()


class Flow(nn.Module):
    """flow(x) -> (z (B, D), log|det dz/dx| (B,)); flow.inverse(z) -> x."""

    def __init__(self, dim: int, couplings: int = 6, width: int = 64):
        super().__init__()
        self.layers = nn.ModuleList(Coupling((torch.arange(dim) + i) % 2 * 1.0, width) for i in range(couplings))

    def forward(self, x):
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z):
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z


def make_flow(info: DataInfo, couplings: int = 6, width: int = 64) -> nn.Module:
    (dim,) = info.shape  # vectors
    return Flow(dim, couplings, width)
