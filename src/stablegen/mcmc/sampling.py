"""Run many chains of one kernel: warmup with adaptation, then sampling.

Warmup follows Stan (Stan Reference Manual, "HMC algorithm parameters"; Hoffman & Gelman
2014, section 3.2): the step size is tuned by dual averaging toward the kernel's target
acceptance (RWMH 0.234, Roberts, Gelman & Gilks 1997; MALA 0.574, Roberts & Rosenthal 1998;
HMC 0.65, Beskos et al. 2013; NUTS 0.8, Stan's default), a diagonal inverse mass matrix
(the proposal scales, for RWMH and MALA) is re-estimated at the end of each slow window,
and the final step size is the dual-averaging average. Each chain adapts on its own by default;
`adaptation="pooled"` shares one step size and one mass matrix estimated from all chains.

HMC and NUTS also act on divergences, as Stan's manual advises users to (raise adapt_delta
when transitions diverge; Betancourt 2017, section 6.2): a divergence means the step size is
unstable in some region of the target, which the chains then under-sample. When any chain
diverges in the settled second half of a slow window run with an adapted mass matrix, at a
step size no larger than the dual-averaging average, every chain's target acceptance becomes
`divergence_target_acceptance` (0.99) for the rest of warmup. Divergences are evidence about the target, not about one chain, so the decision is
shared; raising the target only part way (0.9, 0.95) still leaves the tails of a banana
under-sampled without any divergence to show it (docs/mcmc.md).

Structure: `_warmup` (windows, dual averaging, mass matrix, divergence response), `_draw`
(frozen parameters, keeps the draws), `sample` (checks, timing, `SampleInfo`).

    draws, info = sample("nuts", logdensity_fn, init_position, 1000, 1000, generator)
    # draws (C, S, D); info.num_grad_evals (C,), info.acceptance_rate (C,), ...
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple, get_args

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import hmc, mala, nuts, rwmh
from .adaptation import (
    DualAveragingState,
    WelfordState,
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
DIVERGENCE_TARGET_ACCEPTANCE = 0.99  # HMC and NUTS: every chain's target once a chain diverges in warmup


@dataclass
class SampleInfo:
    """Summary of a `sample` run; per-chain tensors live on the chains' device."""

    kernel: str
    step_size: Tensor  # (C,) after warmup
    target_acceptance: Tensor  # (C,) what the step size was tuned to (raised on divergences)
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


StepFn = Callable[[Any, Tensor, Tensor], tuple[Any, Any]]  # (state, h (C,), m_inv (C, D)) -> (state, info)


def _step_function(kernel: str, logdensity_fn: LogDensityFn, generator: torch.Generator, *,
                   num_integration_steps: int, jitter_integration_steps: bool,
                   max_tree_depth: int) -> StepFn:
    """One transition of `kernel` for every chain, given the step sizes and mass matrix."""
    low, high = max(1, num_integration_steps // 2), num_integration_steps + num_integration_steps // 2

    def step_fn(state, h: Tensor, m_inv: Tensor):
        if kernel == "rwmh":
            return rwmh.step(state, logdensity_fn, h, m_inv, generator)
        if kernel == "mala":
            return mala.step(state, logdensity_fn, h, m_inv, generator)
        if kernel == "hmc":
            steps = num_integration_steps
            if jitter_integration_steps:  # one draw shared by all chains
                steps = int(torch.randint(low, high + 1, (1,), generator=generator, device=generator.device))
            return hmc.step(state, logdensity_fn, h, m_inv, steps, generator)
        return nuts.step(state, logdensity_fn, h, m_inv, generator, max_tree_depth=max_tree_depth)

    return step_fn


class Warmup(NamedTuple):
    """What warmup hands to sampling."""

    state: Any  # the kernel's state after the last warmup iteration
    step_size: Tensor  # (C,) the dual-averaging average of the last window
    inverse_mass_matrix: Tensor  # (C, D) diagonal
    target_acceptance: Tensor  # (C,) the target the step size was tuned to
    num_grad_evals: Tensor  # (C,) gradient evaluations spent


SearchFn = Callable[[Any, Tensor, Tensor], tuple[Tensor, Tensor]]  # (state, h, m_inv) -> (h, evals)


def _warmup(step_fn: StepFn, search_fn: SearchFn | None, state, step_size: Tensor, num_warmup: int,
            target: float, *, search_first: bool, divergence_target: float, pooled: bool,
            adapt_mass_matrix: bool, bar) -> Warmup:
    """Stan's window adaptation of step sizes and mass matrices (module docstring).

    search_fn finds a fresh step size after each new mass matrix, and before the first
    iteration when search_first (None: keep the current one, RWMH). At the end of each slow
    window run with an adapted mass matrix (the second on), a divergent transition of any
    chain in the window's second half, once dual averaging has settled after its restart,
    at a step size no larger than the running average that sampling would use, raises every
    chain's target to divergence_target. (Dual averaging's iterates scatter around that
    average; on a high-dimensional Gaussian the larger ones cross the leapfrog's stability
    limit now and then, which says nothing about the averaged step.)
    """
    x0 = state.position
    c = x0.shape[0]
    h, m_inv = step_size, torch.ones_like(x0)  # (C,), (C, D)
    targets = torch.full_like(h, target)  # (C,)
    grad_evals = torch.zeros(c, dtype=torch.long, device=x0.device)
    if num_warmup == 0:
        return Warmup(state, h, m_inv, targets, grad_evals)

    def search(h: Tensor) -> Tensor:
        nonlocal grad_evals
        if search_fn is None:
            return h
        h, evals = search_fn(state, h, m_inv)
        grad_evals += evals
        return h.log().mean().exp().expand(c).clone() if pooled else h  # geometric mean

    def run_window(length: int, da: DualAveragingState, welford: WelfordState | None):
        """`length` iterations adapting the step size (and collecting draws for the mass
        matrix when welford is given); also says whether any chain diverged in the second half."""
        nonlocal state, h, grad_evals
        diverged = torch.zeros((), dtype=torch.bool, device=x0.device)
        for i in range(length):
            h_used = h
            state, info = step_fn(state, h_used, m_inv)
            grad_evals += info.num_grad_evals
            accept = info.acceptance_rate.mean().expand(c) if pooled else info.acceptance_rate
            da = dual_averaging_update(da, accept, targets)
            h = da.log_step_size.exp()
            if welford is not None:
                welford = welford_update(welford, state.position)
            if 2 * i >= length:  # evidence only at steps no larger than the running average
                at_average = h_used <= da.log_step_size_avg.exp()
                diverged = diverged | (info.is_divergent & at_average).any()
            bar.update()
        return da, welford, bool(diverged)

    windows = warmup_windows(num_warmup) if adapt_mass_matrix else [(0, num_warmup - 1)]
    if search_first:
        h = search(h)
    da = dual_averaging_init(h)
    for k, (start, end) in enumerate(windows):
        slow = 0 < k < len(windows) - 1
        da, welford, diverged = run_window(end - start + 1, da, welford_init(x0) if slow else None)
        if slow:  # new mass matrix, maybe a higher target: restart the step-size search
            if diverged and k > 1:
                targets = targets.clamp(min=divergence_target)
            m_inv = welford_variance(welford, pooled=pooled)
            h = search(h)
            da = dual_averaging_init(h)
    return Warmup(state, da.log_step_size_avg.exp(), m_inv, targets, grad_evals)


class Draws(NamedTuple):
    """The sampling phase's draws and per-chain totals."""

    positions: Tensor  # (C, S, D)
    logdensity: Tensor  # (C, S)
    acceptance_rate: Tensor  # (C,) mean over the draws
    num_divergent: Tensor  # (C,)
    num_grad_evals: Tensor  # (C,)
    mean_tree_depth: Tensor | None  # (C,) NUTS only


def _draw(kernel: str, step_fn: StepFn, state, step_size: Tensor, inverse_mass_matrix: Tensor,
          num_samples: int, bar) -> Draws:
    """Run every chain `num_samples` transitions with frozen parameters, keeping each state."""
    x = state.position
    c, d = x.shape
    positions, logps = x.new_empty(c, num_samples, d), x.new_empty(c, num_samples)
    accept = torch.zeros_like(step_size)
    divergent = torch.zeros(c, dtype=torch.long, device=x.device)
    grad_evals = torch.zeros_like(divergent)
    depth = torch.zeros_like(step_size)
    for s in range(num_samples):
        state, info = step_fn(state, step_size, inverse_mass_matrix)
        positions[:, s] = state.position
        logps[:, s] = state.logdensity
        accept += info.acceptance_rate
        divergent += info.is_divergent
        grad_evals += info.num_grad_evals
        if kernel == "nuts":
            depth += info.tree_depth
        bar.update()
    return Draws(positions, logps, accept / num_samples, divergent, grad_evals,
                 depth / num_samples if kernel == "nuts" else None)


def _check_arguments(kernel: str, adaptation: str, init_position: Tensor, num_warmup: int,
                     num_samples: int, target_acceptance: float | None,
                     divergence_target: float | None, num_integration_steps: int) -> float:
    """Fail loudly on a bad argument; returns the target acceptance."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    target = TARGET_ACCEPTANCE[kernel] if target_acceptance is None else target_acceptance
    if adaptation not in get_args(Adaptation):
        raise ValueError(f"unknown adaptation {adaptation!r}; choose 'pooled' or 'per-chain'")
    if init_position.ndim != 2:
        raise ValueError(f"init_position must be (chains, dim), got {tuple(init_position.shape)}")
    if num_warmup < 0 or num_samples < 1:
        raise ValueError(f"need num_warmup >= 0 and num_samples >= 1, got {num_warmup}, {num_samples}")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target_acceptance must be in (0, 1), got {target}")
    if divergence_target is not None and not 0.0 < divergence_target < 1.0:
        raise ValueError(f"divergence_target_acceptance must be in (0, 1) or None, got {divergence_target}")
    if num_integration_steps < 1:
        raise ValueError(f"num_integration_steps must be >= 1, got {num_integration_steps}")
    return target


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
    divergence_target_acceptance: float | None = DIVERGENCE_TARGET_ACCEPTANCE,
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

    divergence_target_acceptance (HMC and NUTS; None turns it off): the target acceptance
    of every chain once any chain diverges in the second half of a slow window from the
    second on (module docstring); it needs num_warmup >= 150 to have such windows.
    `info.target_acceptance` says which target each chain ended with.
    """
    target = _check_arguments(kernel, adaptation, init_position, num_warmup, num_samples,
                              target_acceptance, divergence_target_acceptance, num_integration_steps)
    if kernel not in ("hmc", "nuts") or divergence_target_acceptance is None:
        divergence_target_acceptance = target  # only HMC's and NUTS's divergences say "smaller steps"
    x0 = init_position.detach()
    c, d = x0.shape
    step_fn = _step_function(kernel, logdensity_fn, generator, num_integration_steps=num_integration_steps,
                             jitter_integration_steps=jitter_integration_steps,
                             max_tree_depth=max_tree_depth)

    def search_fn(state, h: Tensor, m_inv: Tensor) -> tuple[Tensor, Tensor]:
        return find_reasonable_step_size(state, logdensity_fn, h, m_inv, generator)

    default_h = 2.38 / math.sqrt(d) if kernel == "rwmh" else 1.0
    h = torch.full((c,), default_h if step_size is None else step_size, dtype=x0.dtype, device=x0.device)
    bar = tqdm(total=num_warmup + num_samples, disable=not progress, desc=f"{kernel} warmup")

    _sync(x0.device)
    t_start = time.perf_counter()
    state = {"rwmh": rwmh, "mala": mala, "hmc": hmc, "nuts": nuts}[kernel].init(x0, logdensity_fn)
    warm = _warmup(step_fn, None if kernel == "rwmh" else search_fn, state, h, num_warmup, target,
                   search_first=step_size is None, divergence_target=divergence_target_acceptance,
                   pooled=adaptation == "pooled", adapt_mass_matrix=adapt_mass_matrix, bar=bar)
    _sync(x0.device)
    t_warm = time.perf_counter()

    bar.set_description(f"{kernel} sampling")
    out = _draw(kernel, step_fn, warm.state, warm.step_size, warm.inverse_mass_matrix, num_samples, bar)
    bar.close()
    _sync(x0.device)
    t_end = time.perf_counter()
    return out.positions, SampleInfo(
        kernel=kernel,
        step_size=warm.step_size,
        target_acceptance=warm.target_acceptance,
        inverse_mass_matrix=warm.inverse_mass_matrix,
        acceptance_rate=out.acceptance_rate,
        num_divergent=out.num_divergent,
        num_grad_evals=out.num_grad_evals,
        num_grad_evals_warmup=warm.num_grad_evals,
        mean_tree_depth=out.mean_tree_depth,
        logdensity=out.logdensity,
        seconds=t_end - t_warm,
        seconds_warmup=t_warm - t_start,
    )
