"""Kernel Inception Distance (KID).

Binkowski et al. 2018, "Demystifying MMD GANs": the unbiased estimate of the squared MMD
between feature sets with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged
over random subsets (100 subsets of up to 1,000 samples, as in the paper's code and
torch-fidelity); the spread over subsets is reported as its standard deviation (ddof 0).
"""

from __future__ import annotations

import torch
from torch import Tensor


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """k(x, y) = (x.y / d + 1)^3 for (N, d) and (M, d) -> (N, M)."""
    return (x @ y.T).div_(x.shape[1]).add_(1).pow_(3)  # in place: one (N, M) buffer


def mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 between samples x (m, d) and y (n, d), m, n >= 2, polynomial kernel:
    sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(n(n-1)) - 2 sum_{i,j} k(x_i,y_j)/(mn).
    """
    x, y = x.double(), y.double()
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"KID needs at least 2 samples per set; got {m} and {n}")
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(term_xx + term_yy - 2 * k_xy.mean())


def kid(real: Tensor, fake: Tensor, *, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over `subsets` random subsets of min(subset_size, N, M)
    samples of each set, drawn without replacement with `generator`."""
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature widths differ: real {real.shape[1]}, fake {fake.shape[1]}")
    size = min(subset_size, len(real), len(fake))
    values = []
    for _ in range(subsets):
        r = real[torch.randperm(len(real), generator=generator)[:size]]
        f = fake[torch.randperm(len(fake), generator=generator)[:size]]
        values.append(mmd2_unbiased(r, f))
    scores = torch.tensor(values, dtype=torch.float64)
    return float(scores.mean()), float(scores.std(unbiased=False))
