"""Jacobian truncation of a generator's samples (after Tanielian et al. 2020, "Learning
disconnected manifolds: a no GAN's land", ICML; their JBT).

A continuous generator G cannot map a connected latent space onto disconnected modes without
sending some latent mass across the gaps: those "bridge" samples are where G stretches space
most. For z -> x = G(z), the volume element vol(z) = sqrt(det(J^T J)) (J = dG/dz; J J^T when
the latent is the larger side) is the factor in the model density p_G(x) = p_z(z) / vol(z)
on the generator's manifold. Tanielian et al. reject the latents with the largest Jacobian
Frobenius norm at a fixed rejection rate; here a latent is rejected when its volume element
exceeds `ratio` times the median over a burn-in of latents, so a generator without bridges loses
little, and a mode that G reaches from a small latent region (uniformly stretched, not torn) is
kept. The cost is z_dim forward-mode passes per candidate, so it is offered for the MLP
generators of vector data (the toys) and refused for the image nets.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import jacfwd, vmap

Latents = Callable[[int], Tensor]


def log_volume(generator: Callable[[Tensor], Tensor], z: Tensor, chunk: int = 256) -> Tensor:
    """log vol(z) = 1/2 log det(J^T J) (or J J^T, the smaller Gram matrix) per latent, (N,)."""

    def flat(v: Tensor) -> Tensor:
        return generator(v[None]).flatten()

    out = []
    for part in z.split(chunk):
        jac = vmap(jacfwd(flat))(part)  # (n, D, d)
        gram = jac.mT @ jac if jac.shape[-1] <= jac.shape[-2] else jac @ jac.mT
        out.append(0.5 * torch.linalg.slogdet(gram.double()).logabsdet.float())
    return torch.cat(out)


@torch.no_grad()
def truncated_latents(generator: Callable[[Tensor], Tensor], latents: Latents, n: int, ratio: float,
                      burn_in: int = 2048, max_rounds: int = 100) -> Tensor:
    """n latents whose volume element is at most `ratio` x the median of a burn-in draw.

    `latents(b)` draws b latent codes (from the caller's seeded generator, so the result is
    reproducible). The burn-in's accepted latents are used first."""
    z = latents(max(burn_in, n))
    lv = log_volume(generator, z)
    threshold = lv.median() + math.log(ratio)
    kept, have = [z[lv <= threshold]], int((lv <= threshold).sum())
    for _ in range(max_rounds):
        if have >= n:
            return torch.cat(kept)[:n]
        z = latents(max(n - have, 256) * 2)
        ok = log_volume(generator, z) <= threshold
        kept.append(z[ok])
        have += int(ok.sum())
    raise RuntimeError(f"Jacobian truncation kept {have} of the {n} samples asked for after {max_rounds} "
                       f"rounds; raise model.truncation_ratio (now {ratio:g})")
