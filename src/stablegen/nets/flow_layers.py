"""Invertible layers for normalizing flows (one copy, shared by RealNVP and Glow).

Every layer is a bijection with the same two calls:

    forward(x)  -> (y, logdet)   data -> latent direction; logdet (B,) = log|det dy/dx|
    inverse(y)  -> x             latent -> data direction

Layers work on vectors (B, D) and images (B, C, H, W). A whole flow is a `Chain` that ends
in `Flatten` (or in a `FactorOut`, which flattens), so it maps x (B, *shape) to z (B, D).

References:
  Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP" (affine coupling,
    checkerboard and channel masks, squeeze, multi-scale factoring out, logit preprocessing).
  Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions" (actnorm
    with data-dependent init, LU-decomposed 1x1 convolution, sigmoid coupling scale,
    zero-initialized last layers, learned prior of the split).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ScaleFn = Literal["tanh", "sigmoid"]


def _zeros(x: Tensor) -> Tensor:
    return x.new_zeros(x.shape[0])


def _spatial(x: Tensor) -> int:
    """Number of positions sharing one channel's parameters: H*W for images, 1 for vectors."""
    return x.shape[2] * x.shape[3] if x.dim() == 4 else 1


# ---- masks --------------------------------------------------------------------------------


def checkerboard_mask(shape: tuple[int, int, int], parity: int) -> Tensor:
    """(C, H, W) float mask, 1 where (i + j) % 2 == parity (RealNVP figure 3, left)."""
    c, h, w = shape
    ij = torch.arange(h)[:, None] + torch.arange(w)[None, :]
    return ((ij % 2) == parity).float().expand(c, h, w).clone()


def channel_mask(shape: tuple[int, ...], parity: int) -> Tensor:
    """Mask over the first axis (channels of (C, H, W), features of (D,)): 1 on the first
    half when parity is 0, on the second half when parity is 1 (RealNVP figure 3, right)."""
    c = shape[0]
    first = (torch.arange(c) < (c + 1) // 2).float()
    m = first if parity == 0 else 1 - first
    return m.view(c, *([1] * (len(shape) - 1))).expand(*shape).clone()


# ---- conditioners (nets inside the couplings) -----------------------------------------------


class CouplingConvNet(nn.Module):
    """(B, C, H, W) -> (B, 2C, H, W): conv3x3, `blocks` residual blocks, conv3x3 (zero-init
    by the coupling). The conditioner of image couplings (Glow's NN(), RealNVP's small resnet)."""

    def __init__(self, channels: int, width: int = 64, blocks: int = 1):
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 1))
            for _ in range(blocks)
        )
        self.out = nn.Conv2d(width, 2 * channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(F.relu(h))


def zero_init_last(net: nn.Module) -> None:
    """Zero the weight and bias of the last Linear/Conv2d of `net`, so a coupling starts as
    (nearly) the identity (Glow section 3.3)."""
    last = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)


# ---- bijections ----------------------------------------------------------------------------


class AffineCoupling(nn.Module):
    """Masked affine coupling (RealNVP eq. 9): y = x * exp(s(x_m)) + t(x_m) on the unmasked part.

    `mask` (same shape as one sample) marks the conditioning half x_m = x * mask, which passes
    unchanged; `net` maps x_m to 2 x its channels (raw log-scale, shift). The log-scale is
    bounded: "tanh" uses s = bound * tanh(raw / bound) (a soft clamp to (-bound, bound));
    "sigmoid" uses Glow's scale sigmoid(raw + 2) lifted to a floor a = exp(-bound):
    s = log(a + (1 - a) sigmoid(raw + 2)), in (-bound, 0). Without the floor the inverse
    divides by an unbounded 1 / sigmoid, and a rare sample feeds on itself across couplings
    until exp overflows (seen on glow-digits: s = -10, then -4,363 in the next coupling).
    """

    def __init__(self, mask: Tensor, net: nn.Module, scale: ScaleFn = "tanh", bound: float = 2.0):
        super().__init__()
        if scale not in ("tanh", "sigmoid"):
            raise ValueError(f"coupling scale must be 'tanh' or 'sigmoid', got {scale!r}")
        self.register_buffer("mask", mask)
        self.net = net
        self.scale, self.bound = scale, bound
        zero_init_last(net)

    def _s_t(self, x_m: Tensor) -> tuple[Tensor, Tensor]:
        raw, t = self.net(x_m).chunk(2, dim=1)  # each (B, *shape)
        if self.scale == "tanh":
            s = self.bound * torch.tanh(raw / self.bound)
        else:
            floor = math.exp(-self.bound)
            s = torch.log(floor + (1 - floor) * torch.sigmoid(raw + 2.0))
        free = 1 - self.mask
        return s * free, t * free  # zero on the conditioning half

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._s_t(x * self.mask)
        return x * s.exp() + t, s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        s, t = self._s_t(y * self.mask)  # y * mask == x * mask
        return (y - t) * (-s).exp()


class ActNorm(nn.Module):
    """Per-channel affine y = (x + b) * exp(logs) (Glow section 3.1).

    Data-dependent initialisation: `data_init_pending = True` makes the next forward set b and
    logs so that its batch comes out with zero mean and unit variance per channel. Nothing
    happens implicitly: a flow whose data_init was never called keeps the identity. The
    `initialized` buffer travels with the checkpoint, so a reloaded flow is never re-initialized.
    """

    def __init__(self, channels: int, image: bool):
        super().__init__()
        shape = (1, channels, 1, 1) if image else (1, channels)
        self.bias = nn.Parameter(torch.zeros(shape))
        self.logs = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))
        self.data_init_pending = False

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        dims = [0, 2, 3] if x.dim() == 4 else [0]
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.logs.copy_(-(std + 1e-6).log())
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.data_init_pending:
            self.data_init_pending = False
            if not bool(self.initialized):
                self._initialize(x)
        y = (x + self.bias) * self.logs.exp()
        return y, _zeros(x) + self.logs.sum() * _spatial(x)

    def inverse(self, y: Tensor) -> Tensor:
        return y * (-self.logs).exp() - self.bias


class InvertibleLinearLU(nn.Module):
    """Invertible 1x1 convolution with an LU-decomposed weight (Glow section 3.2):
    W = P L (U + diag(sign_s * exp(log_s))), log|det W| = sum(log_s) per position.
    On vectors (B, D) it is the invertible linear map x -> W x."""

    def __init__(self, channels: int, image: bool):
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]  # random rotation
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(s.abs().log())
        self.image = image

    def weight(self) -> Tensor:  # (C, C)
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * self.log_s.exp())
        return self.p @ lower @ upper

    def _mix(self, x: Tensor, w: Tensor) -> Tensor:
        if x.dim() == 4:
            return F.conv2d(x, w[:, :, None, None])
        return x @ w.T

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._mix(x, self.weight()), _zeros(x) + self.log_s.sum() * _spatial(x)

    def inverse(self, y: Tensor) -> Tensor:
        return self._mix(y, torch.linalg.inv(self.weight()))


class Squeeze(nn.Module):
    """Space-to-depth (RealNVP section 3.6): (B, C, H, W) -> (B, 4C, H/2, W/2); log-det 0."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        y = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(b, 4 * c, h // 2, w // 2), _zeros(x)

    def inverse(self, y: Tensor) -> Tensor:
        b, c4, h2, w2 = y.shape
        x = y.view(b, c4 // 4, 2, 2, h2, w2).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c4 // 4, 2 * h2, 2 * w2)


def max_squeezes(h: int, w: int) -> int:
    """How many `Squeeze`s in a row (H, W) allows: both sides must be even each time
    (28x28: 2, 28 -> 14 -> 7; 32x32: 5; odd sides: 0)."""
    n = 0
    while h % 2 == 0 and w % 2 == 0 and h > 1 and w > 1:
        h, w, n = h // 2, w // 2, n + 1
    return n


class LogitTransform(nn.Module):
    """Data in [-1, 1] to logit space (RealNVP section 4.1): with p = (x + 1) / 2,
    y = logit(alpha + (1 - 2 alpha) p). Keeps the model's density supported on [-1, 1]^D."""

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0 < alpha < 0.5:
            raise ValueError(f"logit alpha must be in (0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        q = self.alpha + (1 - 2 * self.alpha) * (x + 1) / 2
        y = q.log() - torch.log1p(-q)
        logdet = math.log((1 - 2 * self.alpha) / 2) - q.log() - torch.log1p(-q)
        return y, logdet.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha) * 2 - 1


class Flatten(nn.Module):
    """(B, *shape) -> (B, D); log-det 0. Ends a flow so every latent is a flat vector."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.flatten(1), _zeros(x)

    def inverse(self, z: Tensor) -> Tensor:
        return z.view(z.shape[0], *self.shape)


class Chain(nn.Module):
    """Bijections applied in order; log-dets add."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = _zeros(x)
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z


class FactorOut(nn.Module):
    """Multi-scale step (RealNVP section 3.6): of x (B, C, H, W), the first C//2 channels go on
    through `inner` (a bijection to a flat vector), the other channels leave as latents now.
    z = concat(inner(x[:, :C//2]), x[:, C//2:].flatten(1)), shape (B, C*H*W)."""

    def __init__(self, shape: tuple[int, int, int], inner: nn.Module):
        super().__init__()
        self.shape = tuple(shape)
        self.keep = shape[0] // 2
        self.inner = inner

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z_in, logdet = self.inner(x[:, : self.keep])
        return torch.cat([z_in, x[:, self.keep :].flatten(1)], dim=1), logdet

    def inverse(self, z: Tensor) -> Tensor:
        c, h, w = self.shape
        d_in = self.keep * h * w
        x_in = self.inner.inverse(z[:, :d_in])
        x_out = z[:, d_in:].view(z.shape[0], c - self.keep, h, w)
        return torch.cat([x_in, x_out], dim=1)


def split_prior(channels: int) -> AffineCoupling:
    """Glow's learned prior of the factored-out half, z2 ~ N(mu(z1), sigma(z1)), written as a
    bijection: an affine coupling over the channel split whose conditioner is one zero-init
    conv3x3 (Glow's split2d). Place it right before a `FactorOut` of `channels` channels."""
    free = channels - channels // 2
    mask = torch.cat([torch.ones(channels // 2), torch.zeros(free)]).view(channels, 1, 1)
    net = nn.Conv2d(channels, 2 * channels, 3, padding=1)
    return AffineCoupling(mask, net, scale="tanh", bound=3.0)


def actnorms(module: nn.Module) -> list[ActNorm]:
    """Every ActNorm inside `module`, in forward order."""
    return [m for m in module.modules() if isinstance(m, ActNorm)]
