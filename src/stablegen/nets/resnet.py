"""ResNet generator and discriminator, SNGAN-style.

Miyato et al. 2018, "Spectral Normalization for GANs", appendix B.4 (CIFAR-10 ResNet):
G: linear to 4x4, three up-sampling residual blocks, BN-ReLU-conv-tanh.
D: an optimized first block, down-sampling residual blocks, ReLU, global sum pooling.
That is the 32 px layout; other sizes follow `layers.ladder`: G starts at 7x7 for 28 px and
up-samples twice (an odd side is built one pixel larger and cropped), D keeps its two
down-sampling blocks (28 -> 14 -> 7) since its global sum pooling takes any size.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import LabelEmbedding, Projection, center_crop, ladder, maybe_sn


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, sn: bool, down: bool, first: bool = False):
        super().__init__()
        self.conv1 = maybe_sn(nn.Conv2d(cin, cout, 3, 1, 1), sn)
        self.conv2 = maybe_sn(nn.Conv2d(cout, cout, 3, 1, 1), sn)
        self.skip = maybe_sn(nn.Conv2d(cin, cout, 1), sn)
        self.down, self.first = down, first

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        s = x
        if self.down:
            h = F.avg_pool2d(h, 2)
            s = F.avg_pool2d(s, 2) if self.first else s
        s = self.skip(s)
        if self.down and not self.first:
            s = F.avg_pool2d(s, 2)
        return h + s


class ResNetGenerator(nn.Module):
    """z (B, z_dim) -> x (B, C, H, W) in [-1, 1]; from ladder(H, W).low (4x4 at 32 px), one
    up-sampling block per doubling."""

    def __init__(self, z_dim: int, shape: tuple[int, int, int], base: int = 128,
                 num_classes: int | None = None):
        super().__init__()
        c, h, w = shape
        steps, self.low, _ = ladder(h, w)
        self.size = (h, w)
        self.label = LabelEmbedding(num_classes, 16)
        self.base = base
        self.linear = nn.Linear(z_dim + self.label.dim, base * self.low[0] * self.low[1])
        self.blocks = nn.Sequential(*(GBlock(base, base) for _ in range(steps)))
        self.out = nn.Sequential(nn.BatchNorm2d(base), nn.ReLU(), nn.Conv2d(base, c, 3, 1, 1), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.linear(self.label(z, y)).view(-1, self.base, *self.low)
        return center_crop(self.out(self.blocks(h)), self.size)  # (B, C, H, W)


class ResNetDiscriminator(nn.Module):
    """x (B, C, H, W) -> score (B,); H, W >= 4 (two 2x average poolings)."""

    def __init__(self, shape: tuple[int, int, int], base: int = 128, spectral_norm: bool = True,
                 num_classes: int | None = None):
        super().__init__()
        c, h, w = shape
        if h < 4 or w < 4:
            raise ValueError(f"the ResNet discriminator halves the resolution twice and needs images of "
                             f"at least 4x4, got {h}x{w}; use net=dcgan")
        self.blocks = nn.Sequential(
            DBlock(c, base, spectral_norm, down=True, first=True),
            DBlock(base, base, spectral_norm, down=True),
            DBlock(base, base, spectral_norm, down=False),
            DBlock(base, base, spectral_norm, down=False),
        )
        self.head = Projection(base, num_classes, spectral_norm)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling, (B, base)
        return self.head(h, y)
