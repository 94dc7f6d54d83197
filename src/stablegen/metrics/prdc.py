"""Precision, recall, density and coverage of generated samples in a feature space.

Precision / recall: Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
Assessing Generative Models": the real (generated) manifold is the union of balls around
each real (generated) feature with radius its distance to the k-th nearest other real
(generated) feature. Precision = share of generated samples inside the real manifold;
recall = share of real samples inside the generated manifold.
Density / coverage: Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
Generative Models": density = (1 / kM) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))] (can exceed
1); coverage = share of real balls B(X_i, NND_k(X_i)) holding at least one generated sample.
Balls are closed (distance <= radius), k = 5 as recommended by Naeem et al.
Distances are computed in row chunks (memory O(chunk * N)) with the matrix-product formula,
in float64 on features centred at the real mean; membership allows a tolerance of 1e-6 times
the features' RMS spread so that round-off never decides a point lying exactly on a ball's
boundary (the k-th neighbour itself, duplicated or memorized samples).
"""

from __future__ import annotations

import torch
from torch import Tensor


def kth_neighbour_distance(x: Tensor, k: int, *, chunk: int = 512) -> Tensor:
    """(N,) distance of each row of x (N, F) to its k-th nearest other row."""
    if len(x) <= k:
        raise ValueError(f"need more than k={k} samples for k-nearest-neighbour radii; got {len(x)}")
    x = x.double()
    # the k+1 smallest distances include the point itself (0)
    return torch.cat([torch.cdist(x[i : i + chunk], x).topk(k + 1, dim=1, largest=False).values[:, -1]
                      for i in range(0, len(x), chunk)])


def prdc(real: Tensor, fake: Tensor, *, k: int = 5, chunk: int = 512) -> dict[str, float]:
    """precision, recall, density, coverage of fake (M, F) features against real (N, F)."""
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need (N, F) and (M, F) features; got {tuple(real.shape)} and {tuple(fake.shape)}")
    centre = real.double().mean(0)
    real, fake = real.double() - centre, fake.double() - centre
    tol = 1e-6 * float(real.square().sum(1).mean().sqrt())
    r_real = kth_neighbour_distance(real, k, chunk=chunk)  # (N,)
    r_fake = kth_neighbour_distance(fake, k, chunk=chunk)  # (M,)

    in_real_manifold, in_real_balls = 0, 0
    for i in range(0, len(fake), chunk):
        inside = torch.cdist(fake[i : i + chunk], real) <= r_real + tol  # (m, N): Y_j in B(X_i)
        in_real_manifold += int(inside.any(1).sum())
        in_real_balls += int(inside.sum())

    in_fake_manifold, covered = 0, 0
    for i in range(0, len(real), chunk):
        dist = torch.cdist(real[i : i + chunk], fake)  # (n, M)
        in_fake_manifold += int((dist <= r_fake + tol).any(1).sum())
        covered += int((dist.min(1).values <= r_real[i : i + chunk] + tol).sum())

    n, m = len(real), len(fake)
    return {"precision": in_real_manifold / m, "recall": in_fake_manifold / n,
            "density": in_real_balls / (k * m), "coverage": covered / n}
