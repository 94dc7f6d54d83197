"""DCGAN-style convolutional generator and discriminator for 8-32 px images.

Radford et al. 2016, "Unsupervised Representation Learning with Deep Convolutional GANs":
strided (transposed) convolutions, batch norm in G, LeakyReLU(0.2) in D, tanh output.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from .layers import LabelEmbedding, MinibatchStdDev, Projection, maybe_sn


def _levels(size: int) -> int:
    """Number of 2x resolution steps between 4x4 and size x size (size in 8, 16, 32, ...)."""
    steps = int(math.log2(size)) - 2
    if size < 8 or 2 ** (steps + 2) != size:
        raise ValueError(f"DCGAN nets need a square power-of-two size >= 8, got {size}")
    return steps


class DCGANGenerator(nn.Module):
    """z (B, z_dim) -> x (B, C, H, W) in [-1, 1]; starts at 4x4 and doubles to H."""

    def __init__(self, z_dim: int, shape: tuple[int, int, int], base: int = 64,
                 num_classes: int | None = None):
        super().__init__()
        c, h, _ = shape
        steps = _levels(h)
        self.label = LabelEmbedding(num_classes, 16)
        ch = base * 2 ** steps
        self.project = nn.Sequential(nn.Linear(z_dim + self.label.dim, ch * 16), nn.Unflatten(1, (ch, 4, 4)),
                                     nn.BatchNorm2d(ch), nn.ReLU())
        blocks: list[nn.Module] = []
        for _ in range(steps):
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU()]
            ch //= 2
        blocks += [nn.Conv2d(ch, c, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*blocks)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.body(self.project(self.label(z, y)))


class DCGANDiscriminator(nn.Module):
    """x (B, C, H, W) -> score (B,); halves the resolution down to 4x4.

    Options: spectral norm on every layer, minibatch stddev before the last conv,
    a projection head for class-conditional data.
    """

    def __init__(self, shape: tuple[int, int, int], base: int = 64, spectral_norm: bool = False,
                 mbstd: bool = False, num_classes: int | None = None):
        super().__init__()
        c, h, _ = shape
        steps = _levels(h)
        layers: list[nn.Module] = [maybe_sn(nn.Conv2d(c, base, 3, 1, 1), spectral_norm), nn.LeakyReLU(0.2)]
        ch = base
        for _ in range(steps):
            layers += [maybe_sn(nn.Conv2d(ch, ch * 2, 4, 2, 1), spectral_norm), nn.LeakyReLU(0.2)]
            ch *= 2
        self.body = nn.Sequential(*layers)
        self.mbstd = MinibatchStdDev() if mbstd else nn.Identity()
        self.final = nn.Sequential(maybe_sn(nn.Conv2d(ch + int(mbstd), ch, 3, 1, 1), spectral_norm),
                                   nn.LeakyReLU(0.2), nn.Flatten())
        self.head = Projection(ch * 16, num_classes, spectral_norm)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.head(self.final(self.mbstd(self.body(x))), y)
