"""A denoiser of your own for stablegen's diffusion models (docs/custom.md)."""

import math

import torch
from torch import nn

from stablegen import DataInfo


class Denoiser(nn.Module):
    """denoiser(x_t, t, y) -> the prediction (eps by default), shaped like x_t (B, D); t holds
    float timesteps 0..T-1, y is None on unlabelled data."""

    def __init__(self, dim: int, timesteps: int = 1000, width: int = 256):
        super().__init__()
        self.timesteps = timesteps
        self.net = nn.Sequential(nn.Linear(dim + 2, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, dim))

    def forward(self, x_t, t, y=None):
        angle = (t / self.timesteps * math.pi / 2).unsqueeze(1)  # (B, 1)
        return self.net(torch.cat([x_t, angle.sin(), angle.cos()], dim=1))


def make_denoiser(info: DataInfo, timesteps: int = 1000, width: int = 256) -> nn.Module:
    (dim,) = info.shape  # vectors
    return Denoiser(dim, timesteps, width)
