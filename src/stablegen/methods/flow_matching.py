"""Flow matching: regress a velocity field onto the velocities of a probability path from noise
to data, sample by integrating the ODE, and get exact log-likelihoods along the way.

Lipman et al. 2023, "Flow Matching for Generative Modeling" (conditional flow matching, the
Gaussian paths: linear with sigma_min, and variance-preserving, eq. 19-20); Liu et al. 2023,
"Flow Straight and Fast" (rectified flow: the linear path with sigma_min = 0, and reflow);
Tong et al. 2024, "Improving and generalizing flow-based generative models with minibatch
optimal transport" (OT-CFM); Esser et al. 2024, "Scaling Rectified Flow Transformers"
(logit-normal time sampling); Ho & Salimans 2022, "Classifier-Free Diffusion Guidance";
Chen et al. 2018, "Neural Ordinary Differential Equations" (instantaneous change of
variables); Grathwohl et al. 2019, "FFJORD" (Hutchinson's trace estimator with a probe fixed
for the whole solve).

Convention: t = 0 is noise x0 ~ N(0, I), t = 1 is data x1; a path is x_t = a_t x1 + s_t x0 and
its conditional velocity u_t = a_t' x1 + s_t' x0 (`path_coefficients`). The nets are the
diffusion family's (nets/denoiser.py, nets/unet.py), which embed a timestep with sinusoids
made for 0..1000: they receive 1000 t (`TIME_SCALE`). The ODE solvers are pure functions in
`ode_samplers`; this file holds the config, the paths, the coupling, the loss and the glue.

Likelihood (`log_prob`): log p_1(x) = log N(z; 0, I) + integral_1^0 div v(x_t, t) dt, with
(x_t, the integral) solved backward from x at t = 1 to z at t = 0. The divergence is exact
(D backward passes) or Hutchinson's eps^T (dv/dx) eps with Rademacher eps (one pass). On
images with grey levels the training batches are uniformly dequantized (as RealNVP's), so
`log_prob` is a density over dequantized data: bits/dim through metrics/likelihood.py.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from typing import Iterator, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..base import (Batch, DataInfo, ExportInput, ExportSpec, FamilyConfig, Method, NetContract, Phase, dims,
                    dummy_data, dummy_labels)
from ..metrics.likelihood import dequantize
from .diffusion import MLPOptions, UNetOptions, denoiser_net, sampling_labels
from .diffusion_samplers import randn
from .ode_samplers import OdeResult, OdeSampler, Velocity, solve

PathName = Literal["linear", "vp"]
Coupling = Literal["independent", "ot"]
TimeSampling = Literal["uniform", "logit_normal"]
Trace = Literal["auto", "exact", "hutchinson"]

TIME_SCALE = 1000.0  # the nets see 1000 t: their sinusoidal embedding is made for diffusion's 0..999
VP_EPS = 1e-5  # the vp path stops at t = 1 - VP_EPS, where its s_t' is still finite (Lipman et al. use 1e-5)
EXACT_TRACE_MAX_DIM = 8  # trace "auto": the exact divergence up to this many dimensions


class FlowMatchingConfig(FamilyConfig):
    """Options of the flow matching family; defaults are the stable choice."""

    NETS = ("velocity",)  # model.nets: velocity(x_t, t, y) -> v (B, *shape), t = 1000 * time
    family: Literal["flow_matching"] = "flow_matching"
    # probability path
    path: PathName = "linear"  # linear: x_t = t x1 + (1 - (1 - sigma_min) t) x0; vp: Lipman et al. eq. 19
    sigma_min: float = Field(0.0, ge=0.0, lt=1.0)  # linear path: noise left at t = 1 (0: rectified flow)
    beta_min: float = Field(0.1, gt=0.0)  # vp path: beta(s) = beta_min + s (beta_max - beta_min)
    beta_max: float = Field(20.0, gt=0.0)  # vp path: largest beta
    # training
    coupling: Coupling = "independent"  # independent noise, or minibatch optimal transport (OT-CFM)
    time_sampling: TimeSampling = "uniform"  # t ~ U[0, 1], or logit-normal (Esser et al. 2024)
    logit_mean: float = 0.0  # logit-normal: t = sigmoid(logit_mean + logit_std n), n ~ N(0, 1)
    logit_std: float = Field(1.0, gt=0.0)  # logit-normal spread
    dequantize: bool = True  # images with grey levels: uniform dequantization of each training batch
    # class conditioning (used when the data are labelled)
    label_dropout: float = Field(0.1, ge=0.0, le=1.0)  # share of labels dropped to "no label" in training
    guidance: float = 1.0  # default CFG scale: 0 unconditional, 1 conditional, > 1 guided
    # reflow (Liu et al. 2023): train on (noise, sample) pairs of a trained flow matching run's ODE
    reflow_from: str | None = None  # run directory of the teacher (None: ordinary flow matching on data)
    reflow_pairs: int = Field(10_000, ge=1)  # pairs drawn once from the teacher, with its sampler and EMA weights
    reflow_seed: int = 0  # seed of the pairs' noise (and labels)
    # sampling defaults (each can be overridden in sample())
    sampler: OdeSampler = "dopri5"  # euler, midpoint, heun (fixed steps) or dopri5 (adaptive)
    steps: int = Field(50, ge=1)  # fixed-step samplers: equal steps from t = 0 to 1
    rtol: float = Field(1e-5, gt=0.0)  # dopri5 (sampling and log_prob): relative tolerance
    atol: float = Field(1e-5, gt=0.0)  # dopri5: absolute tolerance
    # likelihood
    trace: Trace = "auto"  # divergence in log_prob: exact, hutchinson; auto: exact up to 8 dimensions
    # built-in nets (model.nets gives your own)
    net: Literal["auto", "unet", "mlp"] = "auto"  # auto: U-Net for images, MLP for vectors
    unet: UNetOptions = UNetOptions()  # the image velocity net's options
    mlp: MLPOptions = MLPOptions()  # the vector velocity net's options

    @model_validator(mode="after")
    def _check(self) -> "FlowMatchingConfig":
        if self.path == "vp" and self.sigma_min > 0:
            raise ValueError("sigma_min belongs to the linear path; the vp path has beta_min / beta_max")
        if self.beta_max <= self.beta_min:
            raise ValueError(f"beta_max ({self.beta_max}) must exceed beta_min ({self.beta_min})")
        if self.reflow_from is not None and (self.path != "linear" or self.coupling != "independent"):
            raise ValueError("reflow trains the linear path on the teacher's own pairs: it needs path 'linear' "
                             f"and coupling 'independent' (got path {self.path!r}, coupling {self.coupling!r})")
        return self


# ---- paths -------------------------------------------------------------------------------------
def path_coefficients(path: PathName, t: Tensor, *, sigma_min: float = 0.0, beta_min: float = 0.1,
                      beta_max: float = 20.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(a_t, s_t, a_t', s_t') of x_t = a_t x1 + s_t x0, each shaped like t.

    linear (Lipman et al. eq. 20 with sigma_min; sigma_min = 0 is rectified flow):
        a_t = t, s_t = 1 - (1 - sigma_min) t.
    vp (Lipman et al. eq. 19): a_t = alpha(1 - t), s_t = sqrt(1 - a_t^2), with
        alpha(r) = exp(-T(r) / 2), T(r) = beta_min r + (beta_max - beta_min) r^2 / 2,
        so a_t' = beta(1 - t) a_t / 2 and s_t' = -a_t a_t' / s_t (infinite at t = 1).
    """
    if path == "linear":
        return t, 1 - (1 - sigma_min) * t, torch.ones_like(t), torch.full_like(t, -(1 - sigma_min))
    if path == "vp":
        r = 1 - t
        big_t = beta_min * r + 0.5 * (beta_max - beta_min) * r**2  # T(1 - t)
        a = torch.exp(-0.5 * big_t)
        s = (-torch.expm1(-big_t)).sqrt()  # sqrt(1 - a^2), accurate near t = 1
        da = 0.5 * (beta_min + (beta_max - beta_min) * r) * a
        return a, s, da, -a * da / s
    raise ValueError(f"unknown path {path!r}; choose linear or vp")


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *[1] * (like.dim() - 1)).to(like.dtype)


def interpolate(x0: Tensor, x1: Tensor, coef: tuple[Tensor, Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """(x_t, u_t) for noise x0 and data x1 (B, ...) at the path coefficients of `path_coefficients`."""
    a, s, da, ds = (_bcast(c, x1) for c in coef)
    return a * x1 + s * x0, da * x1 + ds * x0


def ot_coupling(x0: Tensor, x1: Tensor) -> Tensor:
    """x0 reordered so that row i goes with x1[i] under the exact minibatch optimal transport plan:
    the assignment minimizing sum_i ||x0[p(i)] - x1[i]||^2 (Tong et al. 2024; equal batches and
    uniform weights make the plan a permutation: scipy's linear_sum_assignment)."""
    cost = torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()).square().cpu().numpy()  # (B, B)
    rows, cols = linear_sum_assignment(cost)
    perm = torch.empty(len(cols), dtype=torch.long)
    perm[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return x0[perm.to(x0.device)]


def sample_times(n: int, scheme: TimeSampling, t_end: float, *, logit_mean: float = 0.0, logit_std: float = 1.0,
                 device: torch.device | str = "cpu") -> Tensor:
    """n training times in [0, t_end] (global RNG, which the trainer seeds and checkpoints)."""
    if scheme == "uniform":
        return torch.rand(n, device=device) * t_end
    return torch.sigmoid(logit_mean + logit_std * torch.randn(n, device=device)) * t_end


@contextmanager
def _rng_kept() -> Iterator[None]:
    """Leave the Python, NumPy and torch RNG states as they were (loading a teacher run reseeds them)."""
    py, npy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available()
                                   else []):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


class FlowMatching(Method):
    """Conditional flow matching around a velocity net `net(x_t, 1000 t, y) -> v`."""

    def __init__(self, cfg: FlowMatchingConfig, info: DataInfo, net: nn.Module):
        super().__init__()
        self.cfg, self.info, self.net = cfg, info, net
        self.conditional = info.num_classes is not None
        self.dequantize = cfg.dequantize and info.levels is not None and info.kind == "image"
        self.t_end = 1.0 if cfg.path == "linear" else 1.0 - VP_EPS
        self._pairs: tuple[Tensor, Tensor, Tensor | None] | None = None  # reflow: (noise, sample, labels)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        c = self.cfg
        return path_coefficients(c.path, t, sigma_min=c.sigma_min, beta_min=c.beta_min, beta_max=c.beta_max)

    # ---- training -------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        return [Phase("main", list(self.net.parameters()), self.loss)]

    def _labels_for_training(self, y: Tensor | None) -> Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise ValueError("this flow matching model is class-conditional (the data has labels) "
                             "but the batch has none; set data.labels: true")
        drop = torch.rand(y.shape, device=y.device) < self.cfg.label_dropout
        return torch.where(drop, torch.full_like(y, self.info.num_classes), y)

    def _endpoints(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None]:
        """(x0 noise, x1 data, labels) of one batch: the data with fresh (optionally OT-coupled)
        noise, or, under reflow, a batch of the teacher's pairs of the same size."""
        if self.cfg.reflow_from is not None:
            z, x, y = self.reflow_pairs()
            idx = torch.randint(len(z), (batch.x.shape[0],), device=z.device)
            return z[idx], x[idx], None if y is None else y[idx]
        x1 = dequantize(batch.x, levels=self.info.levels) if self.dequantize else batch.x
        x0 = torch.randn_like(x1)
        if self.cfg.coupling == "ot":
            x0 = ot_coupling(x0, x1)
        return x0, x1, batch.y

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-sample mean squared error between v(x_t, t) and the path's u_t."""
        x0, x1, y = self._endpoints(batch)  # (B, ...)
        c = self.cfg
        t = sample_times(x1.shape[0], c.time_sampling, self.t_end, logit_mean=c.logit_mean, logit_std=c.logit_std,
                         device=x1.device)  # (B,)
        x_t, u_t = interpolate(x0, x1, self.coefficients(t))
        v = self.net(x_t, t * TIME_SCALE, self._labels_for_training(y))
        mse = (v - u_t).square().flatten(1).mean(1)  # (B,)
        return mse, {"mse": mse.detach().mean()}

    # ---- reflow ---------------------------------------------------------------------------
    def reflow_pairs(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """The teacher's (noise, sample, labels) pairs, drawn at the first call (Liu et al. 2023,
        2-rectified flow): `reflow_pairs` noises from `reflow_seed`, each carried to its sample by
        the teacher run's ODE (its recipe's sampler, EMA weights when kept). Random states are
        left as they were, so a resumed run trains as the uninterrupted one."""
        if self._pairs is None:
            from ..api import load  # the teacher is a run; api imports methods, so not at module level

            cfg = self.cfg
            with _rng_kept(), torch.autocast(self.device.type, enabled=False):  # full precision, even in a bf16 run
                teacher = load(cfg.reflow_from, ema=True).to(self.device).eval()
                if not isinstance(teacher, FlowMatching):
                    raise ValueError(f"model.reflow_from: {cfg.reflow_from} holds a {type(teacher).__name__} run; "
                                     "reflow needs a flow matching run")
                if (teacher.info.shape, teacher.info.num_classes) != (self.info.shape, self.info.num_classes):
                    raise ValueError(f"model.reflow_from: the teacher models shape {teacher.info.shape} with "
                                     f"{teacher.info.num_classes} classes; this run has {self.info.shape} with "
                                     f"{self.info.num_classes}")
                g = torch.Generator().manual_seed(cfg.reflow_seed)
                parts = []
                for i in range(0, cfg.reflow_pairs, 2500):
                    m = min(2500, cfg.reflow_pairs - i)
                    z = randn((m, *self.info.shape), g, self.device)
                    y = teacher.labels_for_sampling(m, None, g)
                    parts.append((z, teacher.sample_ode(m, noise=z, labels=y).x, y))
            z, x, y = (None if p[0] is None else torch.cat(p) for p in zip(*parts))
            self._pairs = (z, x, y)
        return self._pairs

    # ---- sampling -------------------------------------------------------------------------
    def velocity(self, y: Tensor | None = None, guidance: float = 1.0) -> Velocity:
        """v(x, t) for the ODE solvers (t in [0, 1]), with classifier-free guidance
        v_u + w (v_c - v_u) when labels `y` are given (w = 1: the conditional field)."""
        def v(x: Tensor, t: Tensor) -> Tensor:
            tt = (t * TIME_SCALE).to(x.dtype)
            if not self.conditional:
                return self.net(x, tt, None)
            null = torch.full((x.shape[0],), self.info.num_classes, dtype=torch.long, device=x.device)
            if y is None or guidance == 0.0:
                return self.net(x, tt, null)
            if guidance == 1.0:
                return self.net(x, tt, y)
            cond, uncond = self.net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null])).chunk(2)
            return uncond + guidance * (cond - uncond)
        return v

    def labels_for_sampling(self, n: int, labels, generator: torch.Generator | None) -> Tensor | None:
        """Labels (n,) for a conditional model: `labels` (one class or n), or drawn uniformly
        with `generator` when None; None for an unconditional model."""
        return sampling_labels(self.info, self.conditional, self.device, n, labels, generator)

    @torch.no_grad()
    def sample_ode(self, n: int, *, generator: torch.Generator | None = None, noise: Tensor | None = None,
                   sampler: OdeSampler | None = None, steps: int | None = None, rtol: float | None = None,
                   atol: float | None = None, guidance: float | None = None,
                   labels: Tensor | int | list[int] | None = None) -> OdeResult:
        """n samples and the solve's OdeInfo (nfe: velocity evaluations; with guidance w not in
        {0, 1} each is two net passes). Keywords default to the config; `noise` (n, *shape)
        replaces the N(0, I) draw. Images are clamped to the data's range [-1, 1]."""
        c = self.cfg
        sampler = sampler or c.sampler
        if steps is not None and (steps < 1 or sampler == "dopri5"):
            raise ValueError(f"steps must be >= 1, got {steps}" if steps < 1 else
                             f"steps={steps} is for the fixed-step samplers (euler, midpoint, heun); dopri5 chooses "
                             "its own steps from rtol / atol")
        y = self.labels_for_sampling(n, labels, generator)
        x0 = randn((n, *self.info.shape), generator, self.device) if noise is None else noise.to(self.device)
        if x0.shape != (n, *self.info.shape):
            raise ValueError(f"noise must have shape {(n, *self.info.shape)}, got {tuple(x0.shape)}")
        was_training = self.training
        self.eval()
        try:
            out = solve(self.velocity(y, c.guidance if guidance is None else guidance), x0, 0.0, self.t_end,
                        sampler, steps=steps or c.steps, rtol=rtol or c.rtol, atol=atol or c.atol)
        finally:
            self.train(was_training)
        return out._replace(x=out.x.clamp(-1, 1)) if self.info.kind == "image" else out

    def sample(self, n: int, *, generator: torch.Generator | None = None, **kw) -> Tensor:
        """n samples (n, *shape); keywords as `sample_ode` (sampler, steps, rtol, atol, guidance, labels)."""
        return self.sample_ode(n, generator=generator, **kw).x

    # ---- likelihood -----------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, x: Tensor, *, y: Tensor | None = None, trace: Trace | None = None,
                 generator: torch.Generator | None = None, sampler: OdeSampler = "dopri5",
                 steps: int | None = None, rtol: float | None = None, atol: float | None = None) -> Tensor:
        """log p(x) in nats (B,) by the instantaneous change of variables, solved from t = 1 to 0.

        trace: exact divergence (D backward passes per evaluation), hutchinson (one Rademacher
        probe per sample, fixed for the solve, drawn with `generator`; default seed 0), or auto
        (the config's: exact up to 8 dimensions). y: labels of a conditional model; None is the
        unconditional model ("no label"). Solved with dopri5 at the config's tolerances unless
        `sampler` / `steps` / `rtol` / `atol` say otherwise. The vp path starts its prior N(0, I)
        at t = 0, where the path is within exp(-T(1) / 2) ~ 0.7 % of it.
        """
        c = self.cfg
        trace = trace or c.trace
        d = x[0].numel()
        exact = trace == "exact" or (trace == "auto" and d <= EXACT_TRACE_MAX_DIM)
        if trace not in ("auto", "exact", "hutchinson"):
            raise ValueError(f"unknown trace {trace!r}; choose auto, exact or hutchinson")
        b, shape = x.shape[0], x.shape[1:]
        if self.conditional and y is None:
            y = torch.full((b,), self.info.num_classes, dtype=torch.long, device=x.device)
        field = self.velocity(y, 1.0)
        probe = None
        if not exact:
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            probe = (torch.randint(2, x.shape, generator=g, device=g.device) * 2 - 1).to(x)  # Rademacher

        def augmented(state: Tensor, t: Tensor) -> Tensor:  # state (B, D + 1): x and the running integral
            with torch.enable_grad():
                xt = state[:, :d].reshape(b, *shape).detach().requires_grad_(True)
                v = field(xt, t)
                if exact:
                    flat = v.flatten(1)
                    div = sum(torch.autograd.grad(flat[:, i].sum(), xt, retain_graph=i < d - 1)[0].flatten(1)[:, i]
                              for i in range(d))
                else:
                    div = (torch.autograd.grad((v * probe).sum(), xt)[0] * probe).flatten(1).sum(1)
            return torch.cat([v.detach().flatten(1), div.detach()[:, None]], dim=1)

        was_training = self.training
        self.eval()
        try:
            state = torch.cat([x.flatten(1), x.new_zeros(b, 1)], dim=1)
            end = solve(augmented, state, self.t_end, 0.0, sampler, steps=steps or c.steps,
                        rtol=rtol or c.rtol, atol=atol or c.atol).x
        finally:
            self.train(was_training)
        z, integral = end[:, :d], end[:, d]
        return -0.5 * (z.square() + math.log(2 * math.pi)).sum(1) + integral

    # ---- export ---------------------------------------------------------------------------
    def export_net(self) -> ExportSpec:
        """The velocity field: (x_t (n, *shape), t (n,) in [0, 1] [, y (n,)]) -> v (n, *shape);
        the ODE solve is not exported."""
        c, shape = self.cfg, tuple(self.info.shape)
        inputs = {"x_t": ExportInput(("n", *shape), torch.float32, f"a point of the {c.path} path at time t"),
                  "t": ExportInput(("n",), torch.float32, "time in [0, 1]: 0 noise, 1 data")}
        if self.conditional:
            k = self.info.num_classes
            inputs["y"] = ExportInput(("n",), torch.int64, f"class labels 0..{k - 1}; {k} = no label "
                                      "(classifier-free guidance mixes the two velocities)")
        notes = [f"no ODE solve is exported: `stablegen sample` integrates dx/dt = v(x, t) from x = torch.randn(n, "
                 f"*shape) at t = 0 to t = {self.t_end:g} with {c.sampler} (model.* in this file)"]
        extra = {"path": c.path, "time_scale": TIME_SCALE, "t_end": self.t_end}
        return ExportSpec(self.net, lambda x_t, t, *y: self.net(x_t, t * TIME_SCALE, *y), inputs,
                          "the velocity dx/dt, (n, *shape)", notes, extra)


def build(cfg: FlowMatchingConfig, info: DataInfo, nets: dict[str, nn.Module] | None = None) -> FlowMatching:
    """The flow matching method for `info` around the user's `nets["velocity"]`, or the diffusion
    family's nets: a U-Net for images, a residual MLP for vectors."""
    if info.kind == "tokens" or (not nets and info.kind not in ("image", "vector")):
        raise ValueError(f"flow matching models image or vector data; {info.name!r} is {info.kind} data")
    if nets:
        return FlowMatching(cfg, info, nets["velocity"])
    return FlowMatching(cfg, info, denoiser_net(cfg, info))


def net_contracts(cfg: FlowMatchingConfig, info: DataInfo) -> dict[str, NetContract]:
    """velocity(x_t, t, y): x_t (B, *shape), t (B,) = 1000 * time in [0, 1000], y (B,) labels 0..K
    (K = "no label") on labelled data, else None -> the velocity (B, *shape)."""
    conditional = info.num_classes is not None
    y = dummy_labels(info, extra_class=True) if conditional else None
    ys = f"y (B,) in 0..{info.num_classes} ({info.num_classes} = no label)" if conditional else "y=None"
    return {"velocity": NetContract(f"velocity(x_t, t, {ys}) with x_t (B, {dims(info.shape)}), t (B,) = 1000 * time "
                                    f"in [0, 1000] -> the velocity (B, {dims(info.shape)})",
                                    (dummy_data(info), torch.tensor([0.0, TIME_SCALE]), y), (2, *info.shape),
                                    conditional)}
