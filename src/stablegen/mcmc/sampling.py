"""Run many chains of one kernel: warmup with adaptation, then sampling.

Warmup follows Stan (Stan Reference Manual, "HMC algorithm parameters"; Hoffman & Gelman
2014, section 3.2): the step size is tuned by dual averaging toward the kernel's target
acceptance (RWMH 0.234, Roberts, Gelman & Gilks 1997; MALA 0.574, Roberts & Rosenthal 1998;
HMC 0.65, Beskos et al. 2013; NUTS 0.8, Stan's default), a diagonal inverse mass matrix
(the proposal scales, for RWMH and MALA) is re-estimated at the end of each slow window,
and the final step size is the dual-averaging average. Each chain adapts on its own by default;
`adaptation="pooled"` shares one step size and one mass matrix estimated from all chains.

    draws, info = sample("nuts", logdensity_fn, init_position, 1000, 1000, generator)
    # draws (C, S, D); info.num_grad_evals (C,), info.acceptance_rate (C,), ...
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import hmc, mala, nuts, rwmh
from .adaptation import (
    dual_averaging_init,
    dual_averaging_update,
    find_reasonable_step_size,
    warmup_windows,
    welford_init,
    welford_update,
    welford_variance,
)
from .base import LogDensityFn

Kernel = Literal["rwmh", "mala", "hmc", "nuts"]
KERNELS: tuple[str, ...] = get_args(Kernel)
Adaptation = Literal["pooled", "per-chain"]
TARGET_ACCEPTANCE: dict[str, float] = {
    "rwmh": rwmh.TARGET_ACCEPTANCE,
    "mala": mala.TARGET_ACCEPTANCE,
    "hmc": hmc.TARGET_ACCEPTANCE,
    "nuts": nuts.TARGET_ACCEPTANCE,
}


@dataclass
class SampleInfo:
    """Summary of a `sample` run; per-chain tensors live on the chains' device."""

    kernel: str
    step_size: Tensor  # (C,) after warmup
    inverse_mass_matrix: Tensor  # (C, D) diagonal, after warmup
    acceptance_rate: Tensor  # (C,) mean acceptance statistic over the sampling iterations
    num_divergent: Tensor  # (C,) divergent transitions while sampling
    num_grad_evals: Tensor  # (C,) gradient evaluations while sampling
    num_grad_evals_warmup: Tensor  # (C,) gradient evaluations during warmup
    mean_tree_depth: Tensor | None  # (C,) NUTS only
    logdensity: Tensor  # (C, S) log-density of each draw
    seconds: float  # wall time of the sampling phase
    seconds_warmup: float  # wall time of warmup


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _kernel_step(kernel: str, state, logdensity_fn, step_size, m_inv, generator,
                 num_integration_steps: int, max_tree_depth: int):
    if kernel == "rwmh":
        return rwmh.step(state, logdensity_fn, step_size, m_inv, generator)
    if kernel == "mala":
        return mala.step(state, logdensity_fn, step_size, m_inv, generator)
    if kernel == "hmc":
        return hmc.step(state, logdensity_fn, step_size, m_inv, num_integration_steps, generator)
    return nuts.step(state, logdensity_fn, step_size, m_inv, generator, max_tree_depth=max_tree_depth)


def sample(
    kernel: Kernel,
    logdensity_fn: LogDensityFn,
    init_position: Tensor,
    num_warmup: int,
    num_samples: int,
    generator: torch.Generator,
    *,
    step_size: float | None = None,
    target_acceptance: float | None = None,
    adapt_mass_matrix: bool = True,
    adaptation: Adaptation = "per-chain",
    num_integration_steps: int = 16,
    jitter_integration_steps: bool = True,
    max_tree_depth: int = 10,
    progress: bool = False,
) -> tuple[Tensor, SampleInfo]:
    """Warm up and sample C chains from `init_position` (C, D); returns draws (C, S, D).

    step_size: initial step size (default: 2.38 / sqrt(D) for RWMH, Roberts et al. 1997;
    otherwise found by Hoffman & Gelman's Algorithm 4 from 1.0). With num_warmup = 0 it is
    used as is, with an identity mass matrix. num_integration_steps is HMC's mean path
    length in leapfrog steps; with jitter_integration_steps each iteration draws it uniformly
    from [L/2, 3L/2] (one draw for all chains), which breaks the periodic trajectories that
    stall a fixed-length HMC on Gaussian-like targets (Neal 2011, section 5.4.2.2; Mackenzie
    1989). max_tree_depth caps NUTS at 2^max_tree_depth - 1 steps per draw.

    adaptation: "per-chain" (default) adapts each chain on its own, as Stan and NumPyro do;
    "pooled" tunes one step size and one mass matrix for all chains from the mean acceptance
    and the warmup draws of every chain (C times the data of one chain: steadier estimates
    for many dimensions or short warmups; the chains still sample independently once warmup
    ends and the parameters are frozen).
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    if adaptation not in get_args(Adaptation):
        raise ValueError(f"unknown adaptation {adaptation!r}; choose 'pooled' or 'per-chain'")
    pooled = adaptation == "pooled"
    if init_position.ndim != 2:
        raise ValueError(f"init_position must be (chains, dim), got {tuple(init_position.shape)}")
    if num_warmup < 0 or num_samples < 1:
        raise ValueError(f"need num_warmup >= 0 and num_samples >= 1, got {num_warmup}, {num_samples}")
    target = TARGET_ACCEPTANCE[kernel] if target_acceptance is None else target_acceptance
    if not 0.0 < target < 1.0:
        raise ValueError(f"target_acceptance must be in (0, 1), got {target}")
    if num_integration_steps < 1:
        raise ValueError(f"num_integration_steps must be >= 1, got {num_integration_steps}")
    x0 = init_position.detach()
    c, d = x0.shape
    module = {"rwmh": rwmh, "mala": mala, "hmc": hmc, "nuts": nuts}[kernel]
    low, high = max(1, num_integration_steps // 2), num_integration_steps + num_integration_steps // 2

    def step_fn(state, h, m_inv):
        steps = num_integration_steps
        if kernel == "hmc" and jitter_integration_steps:  # one draw shared by all chains
            steps = int(torch.randint(low, high + 1, (1,), generator=generator, device=generator.device))
        return _kernel_step(kernel, state, logdensity_fn, h, m_inv, generator, steps, max_tree_depth)

    _sync(x0.device)
    t_start = time.perf_counter()
    state = module.init(x0, logdensity_fn)
    m_inv = torch.ones_like(x0)  # (C, D)
    default_h = 2.38 / math.sqrt(d) if kernel == "rwmh" else 1.0
    h = torch.full((c,), default_h if step_size is None else step_size, dtype=x0.dtype, device=x0.device)
    grad_evals_warmup = torch.zeros(c, dtype=torch.long, device=x0.device)

    def initial_step_size(h: Tensor) -> Tensor:
        nonlocal grad_evals_warmup
        if kernel == "rwmh":
            return h
        h, evals = find_reasonable_step_size(state, logdensity_fn, h, m_inv, generator)
        grad_evals_warmup += evals
        return h.log().mean().exp().expand(c).clone() if pooled else h  # geometric mean

    bar = tqdm(total=num_warmup + num_samples, disable=not progress, desc=f"{kernel} warmup")
    if num_warmup > 0:
        if step_size is None:
            h = initial_step_size(h)
        da = dual_averaging_init(h)
        slow = warmup_windows(num_warmup)[1:-1] if adapt_mass_matrix else []  # [(start, end)]
        welford = welford_init(x0)
        for i in range(num_warmup):
            state, info = step_fn(state, h, m_inv)
            grad_evals_warmup += info.num_grad_evals
            accept = info.acceptance_rate.mean().expand(c) if pooled else info.acceptance_rate
            da = dual_averaging_update(da, accept, target)
            h = da.log_step_size.exp()
            window_end = next((end for start, end in slow if start <= i <= end), None)
            if window_end is not None:
                welford = welford_update(welford, state.position)
                if i == window_end:  # new mass matrix; restart the step-size search
                    m_inv = welford_variance(welford, pooled=pooled)
                    welford = welford_init(x0)
                    h = initial_step_size(h)
                    da = dual_averaging_init(h)
            bar.update()
        h = da.log_step_size_avg.exp()
    _sync(x0.device)
    t_warm = time.perf_counter()

    bar.set_description(f"{kernel} sampling")
    draws = x0.new_empty(c, num_samples, d)
    logps = x0.new_empty(c, num_samples)
    accept = torch.zeros_like(h)
    divergent = torch.zeros(c, dtype=torch.long, device=x0.device)
    grad_evals = torch.zeros_like(divergent)
    depth = torch.zeros_like(h)
    for s in range(num_samples):
        state, info = step_fn(state, h, m_inv)
        draws[:, s] = state.position
        logps[:, s] = state.logdensity
        accept += info.acceptance_rate
        divergent += info.is_divergent
        grad_evals += info.num_grad_evals
        if kernel == "nuts":
            depth += info.tree_depth
        bar.update()
    bar.close()
    _sync(x0.device)
    t_end = time.perf_counter()
    return draws, SampleInfo(
        kernel=kernel,
        step_size=h,
        inverse_mass_matrix=m_inv,
        acceptance_rate=accept / num_samples,
        num_divergent=divergent,
        num_grad_evals=grad_evals,
        num_grad_evals_warmup=grad_evals_warmup,
        mean_tree_depth=depth / num_samples if kernel == "nuts" else None,
        logdensity=logps,
        seconds=t_end - t_warm,
        seconds_warmup=t_warm - t_start,
    )
