"""Bernoulli-Bernoulli restricted Boltzmann machine.

Smolensky 1986; Hinton 2002, "Training products of experts by minimizing contrastive
divergence" (CD-k); Tieleman 2008, "Training restricted Boltzmann machines using
approximations to the likelihood gradient" (persistent CD). Binary visible v (D,), hidden h (H,):

    E(v, h) = -b.v - c.h - v.W.h,        F(v) = -b.v - sum_j softplus(c_j + (v W)_j)

p(v) = exp(-F(v)) / Z. The loss of the trainer is F(v_data) - mean F(v_model) per sample, whose
gradient is the CD gradient <v sigma(c + v W)>_model - <v sigma(c + v W)>_data (for W; likewise
for b and c). v_model comes from k sweeps of blocked Gibbs sampling (mcmc/gibbs.py, blocks
(h, v)) started at the data (CD-k) or at persistent chains kept as a registered buffer (PCD).

log_prob is log P(v) = -F(v) - log Z with log Z estimated by annealed importance sampling
(Neal 2001; Salakhutdinov & Murray 2008, "On the quantitative analysis of deep belief
networks", section 4.2): from a base-rate RBM (W = 0, c = 0, visible biases from the data's
pixel means) through linearly spaced inverse temperatures beta, M independent runs. The
estimate is cached until the weights change. log_z="exact" sums over all 2^H hidden states
(tiny RBMs only).

Images in data space are {-1, 1} (data.binarize=true); the RBM works on v = (x > 0) in {0, 1}.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..base import Batch, DataInfo, FamilyConfig, Method, Phase
from ..mcmc import gibbs
from .ebm import device_generator

EXACT_MAX_HIDDEN = 24  # log_z="exact" enumerates 2^H hidden states


class RbmConfig(FamilyConfig):  # no nets: W, b and c are the model

    family: Literal["rbm"] = "rbm"
    hidden: int = Field(128, ge=1)  # H: hidden units
    estimator: Literal["cd", "pcd"] = "pcd"  # CD-k from the data, or persistent chains (PCD)
    k: int = Field(1, ge=1)  # Gibbs sweeps per training step
    chains: int = Field(100, ge=1)  # persistent chains (pcd)
    init_std: float = Field(0.01, gt=0)  # std of the initial weights (Hinton 2010, "A practical guide")
    log_z: Literal["ais", "exact"] = "ais"  # how log_prob gets log Z
    ais_runs: int = Field(100, ge=2)  # M: independent AIS runs
    ais_betas: int = Field(2000, ge=2)  # inverse temperatures from 0 to 1, linearly spaced
    sample_steps: int = Field(1000, ge=1)  # Gibbs sweeps at sample time, from the base-rate model


def exact_log_partition(W: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """log Z by summing over all 2^H hidden states (W (D, H), b (D,), c (H,)); float64 scalar:
    log Z = logsumexp_h [c.h + sum_i softplus(b_i + (W h)_i)]."""
    hidden = c.shape[0]
    if hidden > EXACT_MAX_HIDDEN:
        raise ValueError(f"exact log Z enumerates 2^{hidden} hidden states; use log_z='ais' above "
                         f"{EXACT_MAX_HIDDEN} hidden units")
    W, b, c = W.detach().double(), b.detach().double(), c.detach().double()
    codes = torch.arange(2**hidden, device=W.device)
    h = ((codes[:, None] >> torch.arange(hidden, device=W.device)) & 1).double()  # (2^H, H)
    return torch.logsumexp(h @ c + F.softplus(h @ W.T + b).sum(1), dim=0)


class RBM(Method):
    """Weights W (D, H), visible biases b (D,), hidden biases c (H,); one phase, "main"."""

    log_prob_is_discrete = True

    def __init__(self, cfg: RbmConfig, info: DataInfo):
        super().__init__()
        self.cfg, self.info = cfg, info
        d = math.prod(info.shape)
        self.W = nn.Parameter(cfg.init_std * torch.randn(d, cfg.hidden))
        self.b = nn.Parameter(torch.zeros(d))
        self.c = nn.Parameter(torch.zeros(cfg.hidden))
        self.register_buffer("base_bias", torch.zeros(d))  # visible biases of the AIS base-rate RBM
        if cfg.estimator == "pcd":
            self.register_buffer("chains", torch.bernoulli(torch.full((cfg.chains, d), 0.5)))  # (P, D)
        self._last: dict[str, Tensor] = {}
        self._log_z: tuple[Tensor, Tensor] | None = None  # (parameter snapshot, log Z) of the cache

    # ---- energy, conditionals ----------------------------------------------------------
    def visible(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in data space -> binary v (B, D) in {0, 1} (threshold 0)."""
        return (x.flatten(1) > 0).to(self.W.dtype)

    def free_energy(self, v: Tensor) -> Tensor:
        """F(v) = -b.v - sum_j softplus(c_j + (v W)_j), (B, D) -> (B,)."""
        return -v @ self.b - F.softplus(v @ self.W + self.c).sum(1)

    def hidden_probs(self, v: Tensor, beta: float = 1.0) -> Tensor:
        return torch.sigmoid(beta * (v @ self.W + self.c))  # (B, H)

    def visible_probs(self, h: Tensor, beta: float = 1.0) -> Tensor:
        """p(v = 1 | h) at inverse temperature beta (base-rate biases weigh 1 - beta). (B, D)"""
        return torch.sigmoid((1 - beta) * self.base_bias + beta * (h @ self.W.T + self.b))

    def conditionals(self, beta: float = 1.0) -> list[gibbs.Conditional]:
        """Gibbs conditionals of the blocks (h, v) at inverse temperature beta (1: the RBM)."""

        def h_given_v(blocks: tuple[Tensor, ...], g: torch.Generator) -> Tensor:
            return torch.bernoulli(self.hidden_probs(blocks[1], beta), generator=g)

        def v_given_h(blocks: tuple[Tensor, ...], g: torch.Generator) -> Tensor:
            return torch.bernoulli(self.visible_probs(blocks[0], beta), generator=g)

        return [h_given_v, v_given_h]

    def gibbs_chain(self, v: Tensor, sweeps: int, generator: torch.Generator) -> Tensor:
        """`sweeps` blocked Gibbs sweeps (h | v, then v | h) from v (B, D); returns the last v."""
        conds = self.conditionals()
        state = gibbs.init((torch.zeros(v.shape[0], self.cfg.hidden, device=v.device, dtype=v.dtype), v))
        for _ in range(sweeps):
            state, _ = gibbs.step(state, conds, generator)
        return state.blocks[1]

    # ---- training ----------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        return [Phase("main", [self.W, self.b, self.c], self.loss)]

    @torch.no_grad()
    def data_init(self, batch: Batch) -> None:
        """Visible biases log(p / (1 - p)) of the batch's pixel means p (Laplace-smoothed), for
        the model (Hinton 2010, section 8.1) and for the AIS base-rate RBM."""
        v = self.visible(batch.x)
        p = (v.sum(0) + 1) / (v.shape[0] + 2)
        self.b.copy_(torch.logit(p))
        self.base_bias.copy_(torch.logit(p))

    @torch.no_grad()
    def negatives(self, v_data: Tensor, generator: torch.Generator) -> Tensor:
        """v_model: k Gibbs sweeps from the data (cd) or from the persistent chains (pcd)."""
        if self.cfg.estimator == "cd":
            return self.gibbs_chain(v_data, self.cfg.k, generator)
        self.chains.copy_(self.gibbs_chain(self.chains, self.cfg.k, generator))
        return self.chains.clone()

    def cd_loss(self, v_data: Tensor, v_model: Tensor) -> Tensor:
        """F(v_data) - mean F(v_model), per data sample (B,): its gradient is the CD gradient."""
        return self.free_energy(v_data) - self.free_energy(v_model.detach()).mean()

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        v = self.visible(batch.x)  # (B, D)
        v_model = self.negatives(v, device_generator(v.device))
        loss = self.cd_loss(v, v_model)
        with torch.no_grad():
            ph = self.hidden_probs(v)  # (B, H)
            recon = (self.visible_probs(ph) - v).pow(2).mean()
            self._last = {"recon_error": recon, "hidden_mean": ph.mean(),
                          "weight_abs_max": self.W.abs().max()}
        return loss, {"recon_error": recon.detach()}

    def health(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._last.items()}

    # ---- likelihood ----------------------------------------------------------------------
    @torch.no_grad()
    def ais_log_partition(self, runs: int | None = None, betas: int | None = None,
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """AIS estimate of log Z and its standard error (delta method over the M run weights),
        float64 scalars. Salakhutdinov & Murray 2008, section 4.2, with the base-rate RBM A
        (W = 0, c = 0, visible biases base_bias): log Z_A = sum_i softplus(b_A_i) + H log 2 and

            log p*_beta(v) = (1 - beta) b_A.v + beta b.v + sum_j softplus(beta (c_j + (v W)_j))
        """
        runs = self.cfg.ais_runs if runs is None else runs
        n_betas = self.cfg.ais_betas if betas is None else betas
        if runs < 2 or n_betas < 2:
            raise ValueError(f"AIS needs at least 2 runs and 2 temperatures; got {runs}, {n_betas}")
        g = generator if generator is not None else torch.Generator(self.W.device).manual_seed(0)
        W, b, c, b_a = self.W.double(), self.b.double(), self.c.double(), self.base_bias.double()

        def log_ratio(v: Tensor, beta: float, prev: float) -> Tensor:  # log p*_beta(v) - log p*_prev(v), (M,)
            v = v.double()
            a = v @ W + c  # (M, H)
            return (beta - prev) * (v @ (b - b_a)) + (F.softplus(beta * a) - F.softplus(prev * a)).sum(1)

        v = torch.bernoulli(torch.sigmoid(self.base_bias).expand(runs, -1).contiguous(), generator=g)  # (M, D)
        state = gibbs.init((torch.zeros(runs, self.cfg.hidden, dtype=v.dtype, device=v.device), v))
        log_w = torch.zeros(runs, dtype=torch.float64, device=v.device)
        beta_grid = torch.linspace(0.0, 1.0, n_betas, dtype=torch.float64).tolist()
        for prev, beta in zip(beta_grid[:-1], beta_grid[1:]):
            log_w += log_ratio(state.blocks[1], beta, prev)
            if beta < 1.0:  # a Gibbs sweep that leaves p_beta invariant
                state, _ = gibbs.step(state, self.conditionals(beta), g)
        log_z_a = F.softplus(b_a).sum() + self.cfg.hidden * math.log(2.0)
        log_z = log_z_a + torch.logsumexp(log_w, 0) - math.log(runs)
        w = (log_w - log_w.max()).exp()
        std_err = w.std() / (w.mean() * math.sqrt(runs))  # se of log(mean w) by the delta method
        return log_z, std_err

    def log_partition(self) -> Tensor:
        """log Z (float64 scalar) by the configured method, cached until the weights change."""
        snapshot = torch.cat([self.W.detach().flatten(), self.b.detach(), self.c.detach(), self.base_bias])
        if self._log_z is not None and torch.equal(self._log_z[0], snapshot):
            return self._log_z[1]
        if self.cfg.log_z == "exact":
            log_z = exact_log_partition(self.W, self.b, self.c)
        else:
            log_z = self.ais_log_partition()[0]
        self._log_z = (snapshot.clone(), log_z)
        return log_z

    def log_prob(self, x: Tensor) -> Tensor:
        """log P(v) = -F(v) - log Z of the binarized images x (B, C, H, W) -> (B,), in nats."""
        with torch.no_grad():
            return -self.free_energy(self.visible(x)).double() - self.log_partition()

    # ---- sampling ----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, steps: int | None = None, **kw) -> Tensor:
        """n binary images in {-1, 1}: `steps` (default sample_steps) Gibbs sweeps from the base-rate model."""
        if kw:
            raise TypeError(f"RBM sampling takes no options {sorted(kw)}; it has steps=")
        steps = self.cfg.sample_steps if steps is None else steps
        if steps < 0:
            raise ValueError(f"need steps >= 0, got {steps}")
        g = device_generator(self.W.device, generator)
        v = torch.bernoulli(torch.sigmoid(self.base_bias).expand(n, -1).contiguous(), generator=g)  # (n, D)
        v = self.gibbs_chain(v, steps, g)
        return (2 * v - 1).reshape(n, *self.info.shape)


def build(cfg: RbmConfig, info: DataInfo) -> RBM:
    if info.kind != "image" or info.levels != 2:
        raise ValueError(f"model.family=rbm needs binary images; data {info.name!r} has "
                         f"{info.levels or 'continuous'} levels: set data.binarize=true")
    if cfg.log_z == "exact" and cfg.hidden > EXACT_MAX_HIDDEN:
        raise ValueError(f"model.log_z=exact enumerates 2^hidden states; with hidden={cfg.hidden} "
                         f"(> {EXACT_MAX_HIDDEN}) use model.log_z=ais")
    return RBM(cfg, info)
