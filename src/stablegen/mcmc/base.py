"""Shared records and helpers of the MCMC kernels.

Every kernel is a pair of pure functions over a batch of C independent chains
(blackjax's `init` / `step` contract, Cabezas et al. 2024, "BlackJAX: Composable
Bayesian inference in JAX"):

    state = kernel.init(position, logdensity_fn)                    # position (C, D)
    state, info = kernel.step(state, logdensity_fn, <params>, generator)

`logdensity_fn` maps positions (C, D) to unnormalized log-densities (C,); gradients come
from torch.autograd. All randomness comes from the explicit `torch.Generator`, which must
live on the positions' device. Parameters such as the step size may be a float or a tensor
(C,) with one value per chain; a diagonal inverse mass matrix is (D,) or (C, D).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

LogDensityFn = Callable[[Tensor], Tensor]  # (C, D) -> (C,)


class State(NamedTuple):
    """Chain state of a gradient-free kernel (random-walk Metropolis-Hastings)."""

    position: Tensor  # (C, D)
    logdensity: Tensor  # (C,)


class GradState(NamedTuple):
    """Chain state of a gradient-based kernel (MALA, HMC, NUTS)."""

    position: Tensor  # (C, D)
    logdensity: Tensor  # (C,)
    logdensity_grad: Tensor  # (C, D)


def logdensity(fn: LogDensityFn, position: Tensor) -> Tensor:
    """Log-density (C,) without gradient; NaN becomes -inf so a proposal there is rejected."""
    with torch.no_grad():
        value = fn(position)
    check_logdensity(value, position)
    return torch.nan_to_num(value.detach(), nan=-torch.inf)


def logdensity_and_grad(fn: LogDensityFn, position: Tensor) -> tuple[Tensor, Tensor]:
    """Log-density (C,) and its gradient (C, D) by autograd.

    Chains are independent, so the gradient of the sum over chains is each chain's gradient.
    A non-finite log-density is reported as -inf with a zero gradient; the kernels reject
    such points (and NUTS/HMC flag them as divergences).
    """
    with torch.enable_grad():
        x = position.detach().requires_grad_(True)
        value = fn(x)
        check_logdensity(value, position)
        (grad,) = torch.autograd.grad(value.sum(), x)
    value = value.detach()
    # one test for both: the sum is non-finite when the value or any gradient entry is
    ok = torch.isfinite(value + grad.sum(-1))  # (C,)
    value = torch.where(ok, value, -torch.inf)
    grad = torch.where(ok[:, None], grad, 0.0)
    return value, grad


def check_logdensity(value: Tensor, position: Tensor) -> None:
    """Fail loudly when a log-density function does not return one value per chain."""
    if not isinstance(value, Tensor) or value.shape != position.shape[:1]:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"logdensity_fn must map positions {tuple(position.shape)} (chains, dim) to "
            f"({position.shape[0]},) log-densities, got {shape}"
        )


def per_chain(value: float | Tensor, like: Tensor) -> Tensor:
    """A scalar or (C,) parameter as a (C, 1) column matching `like` (C, D)."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return t.reshape(-1, 1) if t.ndim == 1 else t.reshape(1, 1)


def diagonal(inverse_mass_matrix: Tensor | None, like: Tensor) -> Tensor:
    """A diagonal inverse mass matrix (D,) or (C, D) broadcast to (C, D); None means identity."""
    if inverse_mass_matrix is None:
        return torch.ones_like(like)
    m = torch.as_tensor(inverse_mass_matrix, dtype=like.dtype, device=like.device)
    if m.shape[-1] != like.shape[-1] or m.ndim > 2:
        raise ValueError(
            f"inverse_mass_matrix must be a diagonal (D,) or (C, D) with D={like.shape[-1]}, "
            f"got {tuple(m.shape)}"
        )
    return m.expand_as(like)


def normal(like: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal draws shaped like `like`, from `generator`."""
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def uniform(n: int, like: Tensor, generator: torch.Generator) -> Tensor:
    """n uniform draws on [0, 1), from `generator`, with the dtype and device of `like`."""
    return torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)


def metropolis_accept(log_ratio: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Metropolis-Hastings test (Metropolis et al. 1953; Hastings 1970) per chain.

    log_ratio (C,) is the log acceptance ratio (NaN counts as -inf). Returns the acceptance
    probability min(1, exp(log_ratio)) (C,) and the accept decisions (C,) bool.
    """
    log_ratio = torch.nan_to_num(log_ratio, nan=-torch.inf)
    accept_prob = log_ratio.clamp(max=0.0).exp()
    # log u < log_ratio, with u in (0, 1]: identical in law to u < accept_prob, no underflow
    u = 1.0 - uniform(log_ratio.shape[0], log_ratio, generator)
    return accept_prob, u.log() < log_ratio
