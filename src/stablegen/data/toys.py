"""2-D toy distributions.

ring8 and grid25 follow the VEEGAN / PacGAN protocol (Srivastava et al. 2017, Table 1;
Lin et al. 2018): ring8 is 8 Gaussians with means (cos 2πk/8, sin 2πk/8), std 0.01;
grid25 is 25 Gaussians with means {-4,-2,0,2,4}^2, std 0.05. The others are the usual
density-estimation toys (swissroll, moons, checkerboard, pinwheel), drawn with an explicit
generator so a dataset is a pure function of its seed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MIXTURES = ("ring8", "grid25")
TOYS = ("ring8", "grid25", "swissroll", "moons", "checkerboard", "pinwheel")


def mixture_means(name: str) -> Tensor:
    """Mode centres of a 2-D Gaussian mixture, shape (K, 2)."""
    if name == "ring8":
        angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        return torch.stack([angles.cos(), angles.sin()], dim=1).float()
    if name == "grid25":
        axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        return torch.cartesian_prod(axis, axis)
    raise ValueError(f"{name!r} is not a Gaussian mixture; mixtures are {', '.join(MIXTURES)}")


def mixture_std(name: str) -> float:
    """Per-coordinate standard deviation of each mixture component."""
    if name not in MIXTURES:
        raise ValueError(f"{name!r} is not a Gaussian mixture; mixtures are {', '.join(MIXTURES)}")
    return {"ring8": 0.01, "grid25": 0.05}[name]


def sample_toy(name: str, n: int, generator: torch.Generator) -> Tensor:
    """n points from toy `name`, shape (n, 2), float32."""
    g = generator
    if name in MIXTURES:
        means, std = mixture_means(name), mixture_std(name)
        k = torch.randint(len(means), (n,), generator=g)
        return means[k] + std * torch.randn(n, 2, generator=g)
    if name == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
        x = torch.stack([t * t.cos(), t * t.sin()], dim=1) / 5.0
        return x + 0.05 * torch.randn(n, 2, generator=g)
    if name == "moons":
        t = math.pi * torch.rand(n, generator=g)
        upper = torch.rand(n, generator=g) < 0.5
        x = torch.where(upper[:, None],
                        torch.stack([t.cos(), t.sin()], 1),
                        torch.stack([1 - t.cos(), 0.5 - t.sin()], 1))
        return x - torch.tensor([0.5, 0.25]) + 0.05 * torch.randn(n, 2, generator=g)
    if name == "checkerboard":
        x1 = 4 * torch.rand(n, generator=g) - 2
        x2 = torch.rand(n, generator=g) - torch.randint(2, (n,), generator=g) * 2.0
        x2 = x2 + (torch.floor(x1) % 2)
        return torch.stack([x1, x2], 1) * 1.0
    if name == "pinwheel":
        arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
        k = torch.randint(arms, (n,), generator=g)
        feats = torch.randn(n, 2, generator=g) * torch.tensor([radial_std, tangential_std])
        feats[:, 0] += 1.0
        angle = 2 * math.pi * k / arms + rate * feats[:, 0].exp()
        rot = torch.stack([angle.cos(), -angle.sin(), angle.sin(), angle.cos()], 1).view(n, 2, 2)
        return torch.einsum("ni,nij->nj", feats, rot.transpose(1, 2)) * 1.5
    raise ValueError(f"unknown toy {name!r}; toys are {', '.join(TOYS)}")
