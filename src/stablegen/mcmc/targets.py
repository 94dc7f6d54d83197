"""Target densities with known answers, and user log-densities given as `module:function`.

- gaussian: the ill-conditioned Gaussian benchmark (after Inference Gym's
  IllConditionedGaussian, Sountsov, Radul & contributors 2020): covariance Q diag(lambda) Q^T
  with eigenvalues log-spaced over a condition number (default 1e3, geometric mean 1) and a
  fixed random rotation Q. Default 100-d.
- funnel: Neal 2003, "Slice sampling" (section 8): v ~ N(0, 3^2), x_i | v ~ N(0, e^v),
  default 10-d. Known: E = 0, sd(v) = 3, sd(x_i) = exp(9/4).
- banana: the twisted Gaussian of Haario, Saksman & Tamminen 1999 ("Adaptive proposal
  distribution for random walk Metropolis algorithm"): x ~ N(0, diag(100, 1, ..., 1)) with
  x_2 shifted by b (x_1^2 - 100), curvature b = 0.03. Known: E = 0, sd(x_1) = 10,
  sd(x_2) = sqrt(1 + 2 b^2 10^4).
- ring8, grid25: the 2-D Gaussian mixtures of stablegen.data.toys (VEEGAN / PacGAN).

A user's log-density is named `package.module:function` (or `path/to/file.py:function`) and is
imported, never evaluated as text; it must map (C, D) positions to (C,) log-densities.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..data.toys import MIXTURES, mixture_means, mixture_std
from .base import LogDensityFn

TARGETS = ("gaussian", "funnel", "banana", *MIXTURES)
DEFAULT_DIM = {"gaussian": 100, "funnel": 10, "banana": 2, "ring8": 2, "grid25": 2}


class TargetError(ValueError):
    """A target name or `module:function` that cannot be resolved (the CLI exits with 2)."""


@dataclass(frozen=True)
class Target:
    """A log-density over R^dim with, when known, its true means and standard deviations."""

    name: str
    dim: int
    logdensity_fn: LogDensityFn  # (C, dim) -> (C,)
    mean: Tensor | None  # (dim,) true mean, None when unknown
    std: Tensor | None  # (dim,) true standard deviation, None when unknown
    covariance: Tensor | None = None  # (dim, dim) when the target is Gaussian

    def initial_positions(self, chains: int, generator: torch.Generator,
                          dtype: torch.dtype = torch.float64) -> Tensor:
        """Overdispersed starting points, uniform on (-2, 2)^dim as Stan draws them, (C, dim),
        on the generator's device."""
        u = torch.rand(chains, self.dim, generator=generator, device=generator.device, dtype=dtype)
        return 4.0 * u - 2.0


def gaussian(dim: int = 100, condition_number: float = 1e3, *, seed: int = 0,
             dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Target:
    """Zero-mean Gaussian whose covariance has condition number `condition_number`."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # Haar-distributed rotation (Mezzadri 2007)
    half = 0.5 * math.log10(condition_number)
    eigvals = torch.logspace(-half, half, dim, dtype=torch.float64)
    cov = (q * eigvals) @ q.T  # (D, D)
    precision = ((q / eigvals) @ q.T).to(dtype=dtype, device=device)

    def logdensity_fn(x: Tensor) -> Tensor:
        return -0.5 * ((x @ precision) * x).sum(-1)

    cov = cov.to(dtype=dtype, device=device)
    return Target("gaussian", dim, logdensity_fn, torch.zeros(dim, dtype=dtype, device=device),
                  torch.diagonal(cov).sqrt(), cov)


def funnel(dim: int = 10, *, dtype: torch.dtype = torch.float64,
           device: torch.device | str = "cpu") -> Target:
    """Neal's funnel: v = x[:, 0] ~ N(0, 9), x[:, i] ~ N(0, e^v) for i >= 1."""
    if dim < 2:
        raise TargetError(f"funnel needs dim >= 2, got {dim}")

    def logdensity_fn(x: Tensor) -> Tensor:
        v, rest = x[:, 0], x[:, 1:]  # (C,), (C, D-1)
        return -v**2 / 18.0 - 0.5 * (rest**2).sum(-1) * torch.exp(-v) - 0.5 * (dim - 1) * v

    std = torch.full((dim,), math.exp(9 / 4), dtype=dtype, device=device)
    std[0] = 3.0
    return Target("funnel", dim, logdensity_fn, torch.zeros(dim, dtype=dtype, device=device), std)


def banana(dim: int = 2, curvature: float = 0.03, *, dtype: torch.dtype = torch.float64,
           device: torch.device | str = "cpu") -> Target:
    """Haario's twisted Gaussian with curvature b: x_2 + b (x_1^2 - 100) ~ N(0, 1)."""
    if dim < 2:
        raise TargetError(f"banana needs dim >= 2, got {dim}")
    b = curvature

    def logdensity_fn(x: Tensor) -> Tensor:
        y2 = x[:, 1] + b * (x[:, 0] ** 2 - 100.0)
        return -0.5 * (x[:, 0] ** 2 / 100.0 + y2**2 + (x[:, 2:] ** 2).sum(-1))

    std = torch.ones(dim, dtype=dtype, device=device)
    std[0] = 10.0
    std[1] = math.sqrt(1.0 + 2.0 * b**2 * 100.0**2)  # Var(b x_1^2) = 2 b^2 sigma_1^4
    return Target("banana", dim, logdensity_fn, torch.zeros(dim, dtype=dtype, device=device), std)


def mixture(name: str, *, dtype: torch.dtype = torch.float64,
            device: torch.device | str = "cpu") -> Target:
    """An equal-weight 2-D Gaussian mixture from stablegen.data.toys (ring8, grid25)."""
    means = mixture_means(name).to(dtype=dtype, device=device)  # (K, 2)
    sigma = mixture_std(name)
    log_k = math.log(means.shape[0])

    def logdensity_fn(x: Tensor) -> Tensor:
        sq = ((x[:, None, :] - means) ** 2).sum(-1)  # (C, K)
        log_norm = -math.log(2 * math.pi * sigma**2)
        return torch.logsumexp(-0.5 * sq / sigma**2 + log_norm, dim=1) - log_k

    mean = means.mean(0)
    std = (means.var(0, unbiased=False) + sigma**2).sqrt()  # law of total variance
    return Target(name, 2, logdensity_fn, mean, std)


def _import_function(spec: str) -> LogDensityFn:
    """Import `module:function` or `file.py:function` (attribute path allowed after ':')."""
    module_name, _, attr = spec.rpartition(":")  # a Windows path may hold a drive colon
    if not module_name or not attr:
        raise TargetError(f"a custom target must be 'module:function', got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise TargetError(f"no such file {module_name!r} in target {spec!r}")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            cwd = os.getcwd()
            added = cwd not in sys.path
            if added:  # let `mymodule:logp` find a module in the working directory
                sys.path.insert(0, cwd)
            try:
                module = importlib.import_module(module_name)
            finally:
                if added:
                    sys.path.remove(cwd)
    except TargetError:
        raise
    except Exception as e:  # noqa: BLE001 - any import failure is the user's target's fault
        raise TargetError(f"cannot import {module_name!r} for target {spec!r}: "
                          f"{type(e).__name__}: {e}") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"{module_name!r} has no attribute {attr!r} (target {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetError(f"{spec!r} is not callable")
    return obj


def make_target(name: str, dim: int | None = None, *, dtype: torch.dtype = torch.float64,
                device: torch.device | str = "cpu") -> Target:
    """A built-in target by name, or a user's `module:function` (which then needs `dim`).

    Raises TargetError with a "did you mean" hint for an unknown name.
    """
    if ":" in name:
        if dim is None:
            raise TargetError(f"custom target {name!r} needs its dimension (--dim)")
        fn = _import_function(name)
        return Target(name, dim, fn, None, None)
    if name not in TARGETS:
        close = difflib.get_close_matches(name, TARGETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TargetError(f"unknown target {name!r}{hint} Targets: {', '.join(TARGETS)}, "
                          "or module:function")
    if name in MIXTURES:
        if dim not in (None, 2):
            raise TargetError(f"{name} is 2-D, got dim={dim}")
        return mixture(name, dtype=dtype, device=device)
    d = DEFAULT_DIM[name] if dim is None else dim
    if d < 1:
        raise TargetError(f"dim must be >= 1, got {d}")
    build = {"gaussian": gaussian, "funnel": funnel, "banana": banana}[name]
    return build(d, dtype=dtype, device=device)
