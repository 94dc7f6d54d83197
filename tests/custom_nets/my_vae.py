"""An encoder and a decoder of your own for stablegen's VAE (docs/custom.md)."""

import math

from torch import nn

from stablegen import DataInfo


class Encoder(nn.Module):
    """encoder(x) -> (B, 2 z_dim): the posterior's mean, then its log-variance."""

    def __init__(self, shape: tuple[int, ...], z_dim: int, width: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), width), nn.ReLU(),
                                 nn.Linear(width, 2 * z_dim))

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """decoder(z) -> (B, P, *shape): per data dimension the likelihood's location, then (P = 2)
    its log scale."""

    def __init__(self, z_dim: int, shape: tuple[int, ...], params: int = 2, width: int = 256):
        super().__init__()
        self.shape, self.params = tuple(shape), params
        self.net = nn.Sequential(nn.Linear(z_dim, width), nn.ReLU(), nn.Linear(width, params * math.prod(shape)))

    def forward(self, z):
        return self.net(z).view(-1, self.params, *self.shape)


def make_encoder(info: DataInfo, z_dim: int, width: int = 256) -> nn.Module:
    return Encoder(info.shape, z_dim, width)


def make_decoder(info: DataInfo, z_dim: int, params: int = 2, width: int = 256) -> nn.Module:
    return Decoder(z_dim, info.shape, params, width)
