"""MCMC: kernels as pure functions over a batch of chains, adaptation, diagnostics, targets.

    from stablegen import mcmc
    target = mcmc.make_target("banana")
    g = torch.Generator().manual_seed(0)
    draws, info = mcmc.sample("nuts", target.logdensity_fn, target.initial_positions(4, g),
                              num_warmup=500, num_samples=500, generator=g)
    print(mcmc.rhat(draws), mcmc.ess_bulk(draws))
    print(mcmc.convergence_warnings(mcmc.rhat(draws), mcmc.ess_bulk(draws), mcmc.ess_tail(draws),
                                    int(info.num_divergent.sum()), draws.shape[0] * draws.shape[1]))

Kernels (`init(position, logdensity_fn) -> State`, `step(state, logdensity_fn, ..., generator)
-> (State, Info)`): rwmh, mala, hmc, nuts; langevin (unadjusted, for energy-based models);
gibbs works on blocks with conditional samplers.
"""

from . import adaptation, gibbs, hmc, langevin, mala, nuts, rwmh
from .base import GradState, LogDensityFn, State, logdensity_and_grad
from .diagnostics import (
    convergence_warnings, ess_bulk, ess_mean, ess_tail, mcse_mean, mcse_sd, rhat, summarize,
)
from .gibbs import GibbsInfo, GibbsState
from .hmc import HMCInfo
from .mala import MALAInfo
from .nuts import NUTSInfo
from .rwmh import RWMHInfo
from .sampling import KERNELS, Kernel, SampleInfo, sample
from .targets import TARGETS, Target, TargetError, make_target

__all__ = [
    "adaptation", "gibbs", "hmc", "langevin", "mala", "nuts", "rwmh",
    "State", "GradState", "LogDensityFn", "logdensity_and_grad",
    "RWMHInfo", "MALAInfo", "HMCInfo", "NUTSInfo", "GibbsState", "GibbsInfo",
    "sample", "SampleInfo", "Kernel", "KERNELS",
    "rhat", "ess_bulk", "ess_tail", "ess_mean", "summarize", "convergence_warnings",
    "mcse_mean", "mcse_sd",
    "Target", "TargetError", "TARGETS", "make_target",
]
