"""A generator and a critic of your own for stablegen's GAN (docs/custom.md)."""

import math

from torch import nn

from stablegen import DataInfo


class Generator(nn.Module):
    """G(z, y) -> samples (B, *shape); y (class labels) is None for an unconditional GAN."""

    def __init__(self, z_dim: int, shape: tuple[int, ...], width: int = 128):
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Sequential(nn.Linear(z_dim, width), nn.LeakyReLU(0.2), nn.Linear(width, width),
                                 nn.LeakyReLU(0.2), nn.Linear(width, math.prod(shape)))

    def forward(self, z, y=None):
        return self.net(z).view(-1, *self.shape)


class Critic(nn.Module):
    """D(x, y) -> one score per sample (B,)."""

    def __init__(self, shape: tuple[int, ...], width: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(math.prod(shape), width), nn.LeakyReLU(0.2), nn.Linear(width, width),
                                 nn.LeakyReLU(0.2), nn.Linear(width, 1))

    def forward(self, x, y=None):
        return self.net(x.flatten(1)).squeeze(1)


# Factories for a recipe's model.nets: called with the data's DataInfo and model.net_args.<name>.
def make_generator(info: DataInfo, z_dim: int, width: int = 128) -> nn.Module:
    return Generator(z_dim, info.shape, width)


def make_critic(info: DataInfo, width: int = 128) -> nn.Module:
    return Critic(info.shape, width)
