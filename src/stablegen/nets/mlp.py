"""Multi-layer perceptrons, for toys and vector data: a plain MLP, and GAN G/D built on it."""

from __future__ import annotations

from torch import Tensor, nn

from .layers import Activation, LabelEmbedding, MinibatchStdDev, Projection, activation, maybe_sn, maybe_wn


def hidden_stack(in_dim: int, width: int, depth: int, act: Activation, spectral_norm: bool,
                 weight_norm: float | None = None) -> nn.Sequential:
    """`depth` layers of Linear(width) + activation; optionally spectrally normalized, or
    weight-normalized with the direction shrunk to `weight_norm` of its norm (layers.maybe_wn)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        linear = maybe_sn(nn.Linear(in_dim if i == 0 else width, width), spectral_norm)
        layers += [maybe_wn(linear, weight_norm), activation(act)]
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """in_dim -> `depth` hidden layers of `width` -> out_dim; optional spectral or weight norm."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 256, depth: int = 3,
                 act: Activation = "leaky_relu", spectral_norm: bool = False, weight_norm: float | None = None):
        super().__init__()
        self.net = hidden_stack(in_dim, width, depth, act, spectral_norm, weight_norm)
        self.net.append(maybe_wn(maybe_sn(nn.Linear(width if depth else in_dim, out_dim), spectral_norm),
                                 weight_norm))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPGenerator(nn.Module):
    """z (B, z_dim) [+ class embedding] -> x (B, out_dim)."""

    def __init__(self, z_dim: int, out_dim: int, width: int = 256, depth: int = 3,
                 act: Activation = "relu", num_classes: int | None = None, weight_norm: float | None = None):
        super().__init__()
        self.label = LabelEmbedding(num_classes, 16)
        self.net = MLP(z_dim + self.label.dim, out_dim, width, depth, act, weight_norm=weight_norm)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(self.label(z, y))


class MLPCritic(nn.Module):
    """x (B, in_dim) -> score (B,); optional spectral norm, minibatch stddev, projection."""

    def __init__(self, in_dim: int, width: int = 256, depth: int = 3, act: Activation = "leaky_relu",
                 spectral_norm: bool = False, mbstd: bool = False, num_classes: int | None = None,
                 weight_norm: float | None = None):
        super().__init__()
        self.body = hidden_stack(in_dim, width, depth, act, spectral_norm, weight_norm)
        self.mbstd = MinibatchStdDev() if mbstd else nn.Identity()
        self.head = Projection(width + int(mbstd), num_classes, spectral_norm, weight_norm)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.head(self.mbstd(self.body(x)), y)
