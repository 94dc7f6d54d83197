"""DCGAN-style convolutional generator and discriminator for small images (MNIST, CIFAR sizes).

Radford et al. 2016, "Unsupervised Representation Learning with Deep Convolutional GANs":
strided (transposed) convolutions, batch norm in G, LeakyReLU(0.2) in D, tanh output.
The resolutions follow `layers.ladder`: 32 px runs 4 -> 8 -> 16 -> 32 as in the paper, 28 px
(MNIST) 7 -> 14 -> 28; an odd side is built one pixel larger and cropped (G) or padded (D).
"""

from __future__ import annotations

from torch import Tensor, nn

from .layers import LabelEmbedding, MinibatchStdDev, Projection, center_crop, center_pad, ladder, maybe_sn


class DCGANGenerator(nn.Module):
    """z (B, z_dim) -> x (B, C, H, W) in [-1, 1]; starts at ladder(H, W).low (4x4 for powers
    of two) and doubles the resolution up to H x W."""

    def __init__(self, z_dim: int, shape: tuple[int, int, int], base: int = 64,
                 num_classes: int | None = None):
        super().__init__()
        c, h, w = shape
        steps, (h0, w0), _ = ladder(h, w)
        self.size = (h, w)
        self.label = LabelEmbedding(num_classes, 16)
        ch = base * 2 ** steps
        self.project = nn.Sequential(nn.Linear(z_dim + self.label.dim, ch * h0 * w0), nn.Unflatten(1, (ch, h0, w0)),
                                     nn.BatchNorm2d(ch), nn.ReLU())
        blocks: list[nn.Module] = []
        for _ in range(steps):
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU()]
            ch //= 2
        blocks += [nn.Conv2d(ch, c, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*blocks)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return center_crop(self.body(self.project(self.label(z, y))), self.size)  # (B, C, H, W)


class DCGANDiscriminator(nn.Module):
    """x (B, C, H, W) -> score (B,); halves the resolution down to ladder(H, W).low.

    Options: spectral norm on every layer, minibatch stddev before the last conv,
    a projection head for class-conditional data.
    """

    def __init__(self, shape: tuple[int, int, int], base: int = 64, spectral_norm: bool = False,
                 mbstd: bool = False, num_classes: int | None = None):
        super().__init__()
        c, h, w = shape
        steps, (h0, w0), self.padded = ladder(h, w)
        layers: list[nn.Module] = [maybe_sn(nn.Conv2d(c, base, 3, 1, 1), spectral_norm), nn.LeakyReLU(0.2)]
        ch = base
        for _ in range(steps):
            layers += [maybe_sn(nn.Conv2d(ch, ch * 2, 4, 2, 1), spectral_norm), nn.LeakyReLU(0.2)]
            ch *= 2
        self.body = nn.Sequential(*layers)
        self.mbstd = MinibatchStdDev() if mbstd else nn.Identity()
        self.final = nn.Sequential(maybe_sn(nn.Conv2d(ch + int(mbstd), ch, 3, 1, 1), spectral_norm),
                                   nn.LeakyReLU(0.2), nn.Flatten())
        self.head = Projection(ch * h0 * w0, num_classes, spectral_norm)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.body(center_pad(x, self.padded))  # (B, ch, h0, w0)
        return self.head(self.final(self.mbstd(h)), y)
