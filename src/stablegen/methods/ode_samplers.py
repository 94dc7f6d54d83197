"""ODE solvers for flow matching as pure functions: a velocity field in, the end state and an
`OdeInfo` (function evaluations, steps) out. Nothing here knows about nets or paths.

Every solver integrates dx/dt = v(x, t) for x (B, ...) from ts[0] to ts[-1]; v receives t as a
(B,) float tensor. Times may decrease (the likelihood integrates data -> noise).

- `euler`: x += h v(x, t); first order, one evaluation per step.
- `midpoint`: the explicit midpoint rule (RK2); second order, two evaluations per step.
- `heun`: Heun's method (the trapezoidal RK2); second order, two evaluations per step.
- `dopri5`: Dormand & Prince 1980, "A family of embedded Runge-Kutta formulae" (RK5(4), the
  method of MATLAB's ode45 and torchdiffeq's default), adaptive steps from the embedded error
  estimate, first-same-as-last (six evaluations per accepted step), the initial step of
  Hairer, Norsett & Wanner, *Solving ODEs I* (II.4), and the standard step-size controller.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, NamedTuple

import torch
from torch import Tensor

Velocity = Callable[[Tensor, Tensor], Tensor]  # v(x (B, ...), t (B,)) -> (B, ...)
FixedSampler = Literal["euler", "midpoint", "heun"]
OdeSampler = Literal["euler", "midpoint", "heun", "dopri5"]
SAMPLERS: tuple[str, ...] = ("euler", "midpoint", "heun", "dopri5")


class OdeInfo(NamedTuple):
    """What a solve cost: velocity evaluations, accepted and rejected steps (fixed-step: 0)."""

    nfe: int
    steps: int
    rejected: int = 0


class OdeResult(NamedTuple):
    """The end state x (B, ...) and the solve's `OdeInfo`."""

    x: Tensor
    info: OdeInfo


def _at(x: Tensor, t: float) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


def _check_grid(ts: Tensor) -> list[float]:
    if ts.dim() != 1 or len(ts) < 2:
        raise ValueError(f"the time grid needs at least 2 times, got shape {tuple(ts.shape)}")
    return ts.tolist()


def euler(v: Velocity, x: Tensor, ts: Tensor) -> OdeResult:
    """Forward Euler over the time grid ts (N + 1,): N steps, N evaluations."""
    grid = _check_grid(ts)
    for t, t_next in zip(grid[:-1], grid[1:]):
        x = x + (t_next - t) * v(x, _at(x, t))
    return OdeResult(x, OdeInfo(nfe=len(grid) - 1, steps=len(grid) - 1))


def midpoint(v: Velocity, x: Tensor, ts: Tensor) -> OdeResult:
    """Explicit midpoint: x += h v(x + h/2 v(x, t), t + h/2); 2 evaluations per step."""
    grid = _check_grid(ts)
    for t, t_next in zip(grid[:-1], grid[1:]):
        h = t_next - t
        x_half = x + 0.5 * h * v(x, _at(x, t))
        x = x + h * v(x_half, _at(x, t + 0.5 * h))
    return OdeResult(x, OdeInfo(nfe=2 * (len(grid) - 1), steps=len(grid) - 1))


def heun(v: Velocity, x: Tensor, ts: Tensor) -> OdeResult:
    """Heun: k1 = v(x, t), k2 = v(x + h k1, t + h), x += h (k1 + k2) / 2; 2 evaluations per step."""
    grid = _check_grid(ts)
    for t, t_next in zip(grid[:-1], grid[1:]):
        h = t_next - t
        k1 = v(x, _at(x, t))
        k2 = v(x + h * k1, _at(x, t_next))
        x = x + 0.5 * h * (k1 + k2)
    return OdeResult(x, OdeInfo(nfe=2 * (len(grid) - 1), steps=len(grid) - 1))


# ---- Dormand-Prince 5(4) -----------------------------------------------------------------
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),  # = the 5th-order weights (FSAL)
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4))  # error weights: 5th minus embedded 4th order


def _rms(err: Tensor, x0: Tensor, x1: Tensor, rtol: float, atol: float) -> float:
    """Hairer's error norm: RMS over every element of err / (atol + rtol max(|x0|, |x1|))."""
    scale = atol + rtol * torch.maximum(x0.abs(), x1.abs())
    return float((err / scale).square().mean().sqrt())


def dopri5(v: Velocity, x: Tensor, t0: float, t1: float, *, rtol: float = 1e-5, atol: float = 1e-5,
           first_step: float | None = None, max_steps: int = 10_000) -> OdeResult:
    """Adaptive Dormand-Prince RK5(4) from t0 to t1 (either direction); one step size for the
    whole batch, accepted when the RMS of the scaled error estimate is <= 1. The step then
    changes by 0.9 err^(-1/5), clipped to [0.2, 10]. RuntimeError after `max_steps` tries, or
    at once when the velocity is not finite."""
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"dopri5 needs rtol > 0 and atol > 0, got rtol={rtol}, atol={atol}")
    span = t1 - t0
    if span == 0:
        return OdeResult(x, OdeInfo(0, 0))
    direction = math.copysign(1.0, span)
    k1 = v(x, _at(x, t0))
    nfe = 1
    if first_step is None:  # Hairer et al. II.4: a step whose Euler change is ~1 % of the state
        scale = atol + rtol * x.abs()
        d0 = float((x / scale).square().mean().sqrt())
        d1 = float((k1 / scale).square().mean().sqrt())
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        x_probe = x + direction * h0 * k1
        k_probe = v(x_probe, _at(x, t0 + direction * h0))
        nfe += 1
        d2 = float(((k_probe - k1) / scale).square().mean().sqrt()) / h0
        h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
        first_step = min(100 * h0, h1)
    h = min(abs(first_step), abs(span))
    t, steps, rejected = t0, 0, 0
    while direction * (t1 - t) > 0:
        if steps + rejected >= max_steps:
            raise RuntimeError(f"dopri5 did not reach t={t1} in {max_steps} steps (at t={t:.6g}, step {h:.3g}); "
                               "loosen rtol/atol or use a fixed-step sampler")
        h = min(h, abs(t1 - t))
        hs = direction * h
        ks = [k1]
        for i in range(1, 7):
            xi = x + hs * sum(a * k for a, k in zip(_A[i], ks) if a != 0.0)
            ks.append(v(xi, _at(x, t + _C[i] * hs)))
        nfe += 6
        x_new = xi  # the 7th stage point is the 5th-order solution (FSAL)
        err = hs * sum(e * k for e, k in zip(_E, ks) if e != 0.0)
        ratio = _rms(err, x, x_new, rtol, atol)
        if not math.isfinite(ratio):
            raise RuntimeError(f"dopri5: the velocity field is not finite near t={t:.6g}")
        if ratio <= 1.0:
            t = t1 if h == abs(t1 - t) else t + hs
            x, k1 = x_new, ks[6]
            steps += 1
        else:
            rejected += 1
        factor = 10.0 if ratio == 0 else min(10.0, max(0.2, 0.9 * ratio ** (-1 / 5)))
        h = h * (min(1.0, factor) if ratio > 1.0 else factor)
    return OdeResult(x, OdeInfo(nfe, steps, rejected))


def solve(v: Velocity, x: Tensor, t0: float, t1: float, sampler: OdeSampler, *, steps: int = 50,
          rtol: float = 1e-5, atol: float = 1e-5) -> OdeResult:
    """Integrate from t0 to t1 with `sampler`: a fixed-step one on `steps` equal steps, or dopri5
    with `rtol` / `atol`."""
    if sampler == "dopri5":
        return dopri5(v, x, t0, t1, rtol=rtol, atol=atol)
    fixed = {"euler": euler, "midpoint": midpoint, "heun": heun}
    if sampler not in fixed:
        raise ValueError(f"unknown ODE sampler {sampler!r}; choose {', '.join(SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return fixed[sampler](v, x, torch.linspace(t0, t1, steps + 1, dtype=torch.float64))
