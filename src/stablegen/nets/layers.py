"""Layers shared by several nets (one copy each)."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["relu", "leaky_relu", "silu", "tanh", "elu"]


def activation(name: Activation) -> nn.Module:
    """An activation module by name; leaky_relu uses slope 0.2 (DCGAN, Radford et al. 2016)."""
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "silu":
        return nn.SiLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "elu":
        return nn.ELU()
    raise ValueError(f"unknown activation {name!r}; choose relu, leaky_relu, silu, tanh or elu")


def maybe_sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap `module` in spectral normalization (Miyato et al. 2018) when enabled."""
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


def maybe_wn(module: nn.Module, scale: float | None) -> nn.Module:
    """Weight normalization (Salimans & Kingma 2016), w = g v / |v| per output unit, through
    torch's parametrization, when `scale` is given; g starts at |v| (the layer computes what it
    did before) and v is then shrunk to `scale` times its norm, which leaves w unchanged.

    Why shrink v: w does not depend on |v|, so a step of size lr turns v's direction by about
    lr / |v|, and Adam's steps are orthogonal-ish to v, so |v| grows with the steps taken
    (Arora, Li & Lyu 2019, "auto rate-tuning"; Wan et al. 2021, "spherical motion dynamics").
    A small |v| makes a low learning rate turn the weights quickly; a high one grows |v| and
    slows itself down: the effective rate depends much less on the configured one."""
    if scale is None:
        return module
    module = nn.utils.parametrizations.weight_norm(module)
    with torch.no_grad():
        module.parametrizations.weight.original1.mul_(scale)  # v; original0 is g
    return module


class Ladder(NamedTuple):
    """Resolutions of a conv net that doubles (or halves) the resolution `steps` times between
    `low` and `high` = low * 2**steps, the first size >= the image's that doubling reaches."""

    steps: int
    low: tuple[int, int]
    high: tuple[int, int]


def ladder(h: int, w: int) -> Ladder:
    """Halve (H, W), rounding up, while both sides are >= 8 px: powers of two end at 4 px
    (32 -> 16 -> 8 -> 4, DCGAN's layout), 28 at 7 (28 -> 14 -> 7), 24 at 6, and 27 at 7 too,
    with high = 28. A net that grows builds `high` from `low` and crops it to (H, W)
    (`center_crop`); a net that shrinks pads (H, W) to `high` first (`center_pad`). Neither
    happens unless a halving meets an odd side >= 8 (27, 18 -> 9, 30 -> 15)."""
    steps, lh, lw = 0, h, w
    while min(lh, lw) >= 8:
        lh, lw, steps = (lh + 1) // 2, (lw + 1) // 2, steps + 1
    return Ladder(steps, (lh, lw), (lh << steps, lw << steps))


def center_pad(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero-pad x (B, C, H, W) to (B, C, *size), centred; the odd pixel goes bottom / right."""
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def center_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The centred (B, C, *size) window of x (B, C, H, W); undoes `center_pad`."""
    dh, dw = x.shape[-2] - size[0], x.shape[-1] - size[1]
    if dh == 0 and dw == 0:
        return x
    return x[..., dh // 2 : dh // 2 + size[0], dw // 2 : dw // 2 + size[1]]


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, ProGAN section 3).

    Appends one feature: the standard deviation of each feature over groups of `group`
    samples, averaged over features, so the critic can see a lack of variety.
    Works on (B, C, H, W) images (adds a channel) and (B, D) vectors (adds a column).
    """

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        g = min(self.group, b)
        while b % g:
            g -= 1
        # in float32 under fp16 / bf16 autocast too: 1e-8 underflows to 0 in half precision, and
        # the gradient of sqrt at 0 is inf
        y = x.float().reshape(g, b // g, *x.shape[1:])  # (G, M, ...)
        # biased variance over the group, written out: Tensor.var over a leading dim of 4 is
        # ~8x slower on CPU (measured on (4, 64, 256))
        y = ((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt()  # (M, ...)
        y = y.reshape(b // g, -1).mean(dim=1).to(x.dtype)  # (M,)
        y = y.repeat(g)  # (B,) — sample i belongs to group i % M
        if x.dim() == 4:
            return torch.cat([x, y.view(b, 1, 1, 1).expand(b, 1, *x.shape[2:])], dim=1)
        return torch.cat([x, y.view(b, 1)], dim=1)


class Projection(nn.Module):
    """Output head of a projection discriminator (Miyato & Koyama 2018, eq. 3).

    f(x, y) = psi(h) + <embed(y), h>; without classes it is the plain linear head psi(h).
    """

    def __init__(self, features: int, num_classes: int | None, spectral_norm: bool,
                 weight_norm: float | None = None):
        super().__init__()
        self.psi = maybe_wn(maybe_sn(nn.Linear(features, 1), spectral_norm), weight_norm)
        self.embed = maybe_sn(nn.Embedding(num_classes, features), spectral_norm) if num_classes else None

    def forward(self, h: Tensor, y: Tensor | None = None) -> Tensor:  # h (B, F) -> (B,)
        out = self.psi(h).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("this discriminator is class-conditional: pass labels y")
            out = out + (self.embed(y) * h).sum(dim=1)
        return out


class LabelEmbedding(nn.Module):
    """Concatenate a learned class embedding to a latent (conditional generator input)."""

    def __init__(self, num_classes: int | None, dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, dim) if num_classes else None
        self.dim = dim if num_classes else 0

    def forward(self, z: Tensor, y: Tensor | None) -> Tensor:
        if self.embed is None:
            return z
        if y is None:
            raise ValueError("this generator is class-conditional: pass labels y")
        return torch.cat([z, self.embed(y)], dim=1)
