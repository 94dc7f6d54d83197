"""The handwritten digits that ship with scikit-learn (8x8, 17 grey levels 0..16).

Images come out as float tensors in [-1, 1], shape (N, 1, H, W); labels as int64 (N,).
`stacked_digits` builds the 1,000-mode stacked variant of VEEGAN / PacGAN: three random
digits as the three channels, the mode being the triple of labels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

LEVELS = 17  # grey levels 0..16


def load_digits(size: int | None = None) -> tuple[Tensor, Tensor]:
    """All 1,797 digits as (x, y): x (N, 1, size, size) in [-1, 1], y (N,) int64."""
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32)) / (LEVELS - 1) * 2 - 1  # (N, 8, 8)
    x = x.unsqueeze(1)
    if size is not None and size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)
    return x, torch.from_numpy(bunch.target.astype(np.int64))


def to_levels(x: Tensor) -> Tensor:
    """Map [-1, 1] images back to integer grey levels 0..16 (int64)."""
    return ((x.clamp(-1, 1) + 1) / 2 * (LEVELS - 1)).round().long()


def benchmark_split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test) of the fixed likelihood split of BENCHMARKS.md.

    A default_rng(0) permutation of the 1,797 images: first 1,437 train, last 360 test;
    validation is 10 % of train chosen with default_rng(1).
    """
    perm = np.random.default_rng(0).permutation(1797)
    train, test = perm[:1437], perm[1437:]
    val_mask = np.zeros(len(train), dtype=bool)
    val_mask[np.random.default_rng(1).permutation(len(train))[: len(train) // 10]] = True
    return train[~val_mask], train[val_mask], test


def stacked_digits(n: int, generator: torch.Generator, size: int | None = None) -> tuple[Tensor, Tensor]:
    """n stacked images (n, 3, H, W) and their modes (n,) = 100*y0 + 10*y1 + y2."""
    x, y = load_digits(size)
    idx = torch.randint(len(x), (n, 3), generator=generator)
    images = torch.cat([x[idx[:, c]] for c in range(3)], dim=1)
    modes = 100 * y[idx[:, 0]] + 10 * y[idx[:, 1]] + y[idx[:, 2]]
    return images, modes
