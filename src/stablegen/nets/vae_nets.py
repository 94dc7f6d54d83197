"""Encoders and decoders for latent-variable models of vectors and images (MLP and conv).

The nets only map tensors: an encoder x (B, *shape) -> (B, out_dim) (a VAE reads the output
as Gaussian posterior parameters), a decoder z (B, z_dim) -> (B, params, *shape): `params`
numbers per data dimension (a VAE reads them as the parameters of its likelihood).
The conv pair follows the small DCGAN-like encoders/decoders of Kingma & Welling 2014-era
image VAEs: strided 4x4 convolutions halving the resolution down to 4 px (7 px for 28 px
images; `layers.ladder`), mirrored by transposed convolutions.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from .layers import Activation, activation, center_crop, center_pad, ladder
from .mlp import MLP


class MLPEncoder(nn.Module):
    """x (B, *shape) -> (B, out_dim), flattening x first."""

    def __init__(self, shape: tuple[int, ...], out_dim: int, width: int = 256, depth: int = 2,
                 act: Activation = "relu"):
        super().__init__()
        self.net = MLP(math.prod(shape), out_dim, width, depth, act)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """z (B, z_dim) -> (B, params, *shape)."""

    def __init__(self, z_dim: int, shape: tuple[int, ...], params: int, width: int = 256, depth: int = 2,
                 act: Activation = "relu"):
        super().__init__()
        self.shape, self.params = tuple(shape), params
        self.net = MLP(z_dim, params * math.prod(shape), width, depth, act)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], self.params, *self.shape)


class ConvEncoder(nn.Module):
    """x (B, C, H, W) -> (B, out_dim): a 3x3 stem, then stride-2 4x4 convs down to
    ladder(H, W).low (4 px for powers of two, 7 for 28); an odd side is zero-padded by one first."""

    def __init__(self, shape: tuple[int, int, int], out_dim: int, base: int = 32, act: Activation = "relu"):
        super().__init__()
        c, h, w = shape
        steps, (h0, w0), self.padded = ladder(h, w)
        layers: list[nn.Module] = [nn.Conv2d(c, base, 3, 1, 1), activation(act)]
        ch = base
        for _ in range(steps):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1), activation(act)]
            ch *= 2
        layers += [nn.Flatten(), nn.Linear(ch * h0 * w0, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(center_pad(x, self.padded))


class ConvDecoder(nn.Module):
    """z (B, z_dim) -> (B, params, C, H, W): linear to ladder(H, W).low, stride-2 transposed
    convs up to H x W (an odd side is built one pixel larger and cropped)."""

    def __init__(self, z_dim: int, shape: tuple[int, int, int], params: int, base: int = 32,
                 act: Activation = "relu"):
        super().__init__()
        c, h, w = shape
        steps, (h0, w0), _ = ladder(h, w)
        self.shape, self.params = tuple(shape), params
        ch = base * 2 ** steps
        layers: list[nn.Module] = [nn.Linear(z_dim, ch * h0 * w0), activation(act),
                                   nn.Unflatten(1, (ch, h0, w0))]
        for _ in range(steps):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), activation(act)]
            ch //= 2
        layers.append(nn.Conv2d(ch, params * c, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        x = center_crop(self.net(z), self.shape[1:])  # (B, params * C, H, W)
        return x.reshape(z.shape[0], self.params, *self.shape)
