"""Targets: log-densities equal the exact ones up to a constant; stated moments are right;
`module:function` targets import (never evaluate text) and fail with clear errors."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from stablegen import mcmc
from stablegen.data.toys import mixture_means, mixture_std, sample_toy
from stablegen.mcmc.targets import TargetError


def assert_constant_difference(a: torch.Tensor, b: torch.Tensor) -> None:
    d = a - b
    torch.testing.assert_close(d, d[0].expand_as(d), rtol=0, atol=1e-9)


def test_gaussian():
    t = mcmc.make_target("gaussian", 6)
    cov = t.covariance
    eig = torch.linalg.eigvalsh(cov)
    assert math.isclose(float(eig.max() / eig.min()), 1e3, rel_tol=1e-6)
    x = torch.randn(20, 6, dtype=torch.float64)
    exact = MultivariateNormal(torch.zeros(6, dtype=torch.float64), cov).log_prob(x)
    assert_constant_difference(t.logdensity_fn(x), exact)
    torch.testing.assert_close(t.std, torch.diagonal(cov).sqrt())
    assert mcmc.make_target("gaussian").dim == 100


def test_funnel_and_banana_exact_densities_and_moments():
    g = torch.Generator().manual_seed(0)
    n = 400_000
    # funnel: v ~ N(0, 3^2), x_i | v ~ N(0, e^v)
    f = mcmc.make_target("funnel")
    v = 3 * torch.randn(n, generator=g, dtype=torch.float64)
    xs = torch.randn(n, 9, generator=g, dtype=torch.float64) * (v / 2).exp()[:, None]
    pts = torch.cat([v[:, None], xs], 1)
    exact = Normal(0.0, 3.0).log_prob(v) + Normal(0.0, (v / 2).exp()[:, None]).log_prob(xs).sum(-1)
    assert_constant_difference(f.logdensity_fn(pts[:50]), exact[:50])
    assert f.dim == 10 and float(f.std[0]) == 3.0 and math.isclose(float(f.std[1]), math.exp(9 / 4))
    # banana: x1 ~ N(0, 100), x2 + b (x1^2 - 100) ~ N(0, 1) (a shear: Jacobian 1)
    b = mcmc.make_target("banana")
    x1 = 10 * torch.randn(n, generator=g, dtype=torch.float64)
    x2 = torch.randn(n, generator=g, dtype=torch.float64) - 0.03 * (x1**2 - 100)
    pts = torch.stack([x1, x2], 1)
    exact = Normal(0.0, 10.0).log_prob(x1) + Normal(0.0, 1.0).log_prob(x2 + 0.03 * (x1**2 - 100))
    assert_constant_difference(b.logdensity_fn(pts[:50]), exact[:50])
    # stated sds against 400k exact draws: relative standard error of an sd < 1 % here
    torch.testing.assert_close(pts.std(0), b.std, rtol=0.02, atol=0)
    torch.testing.assert_close(pts.mean(0), b.mean, rtol=0, atol=0.1)


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_mixtures_follow_the_toys(name):
    t = mcmc.make_target(name)
    means, std = mixture_means(name).double(), mixture_std(name)
    x = sample_toy(name, 200_000, torch.Generator().manual_seed(0)).double()
    torch.testing.assert_close(x.mean(0), t.mean, rtol=0, atol=0.03)
    torch.testing.assert_close(x.std(0), t.std, rtol=0.01, atol=0)
    comp = Normal(means[:, None, :], std)  # exact mixture log-density at a few points
    pts = x[:20]
    exact = torch.logsumexp(comp.log_prob(pts[None]).sum(-1), 0) - math.log(len(means))
    torch.testing.assert_close(t.logdensity_fn(pts), exact)


def test_unknown_target_suggests_a_name():
    with pytest.raises(TargetError, match="did you mean 'gaussian'"):
        mcmc.make_target("gausian")
    with pytest.raises(TargetError, match="2-D"):
        mcmc.make_target("ring8", dim=3)


def test_module_function_targets(tmp_path, monkeypatch):
    (tmp_path / "usertarget_mcmc.py").write_text(
        "import torch\n"
        "def logp(x):\n    return -0.5 * (x ** 2).sum(-1)\n"
        "class Models:\n    @staticmethod\n    def wide(x):\n        return -0.5 * (x ** 2).sum(-1) / 4\n"
        "not_callable = 3\n"
    )
    monkeypatch.chdir(tmp_path)  # a module in the working directory is found
    monkeypatch.delitem(sys.modules, "usertarget_mcmc", raising=False)
    t = mcmc.make_target("usertarget_mcmc:logp", 3)
    assert t.dim == 3 and t.mean is None
    torch.testing.assert_close(t.logdensity_fn(torch.ones(2, 3)), torch.full((2,), -1.5))
    assert mcmc.make_target("usertarget_mcmc:Models.wide", 2).logdensity_fn(torch.ones(1, 2)).item() == -0.25
    assert mcmc.make_target(f"{tmp_path / 'usertarget_mcmc.py'}:logp", 2).dim == 2
    with pytest.raises(TargetError, match="needs its dimension"):
        mcmc.make_target("usertarget_mcmc:logp")
    with pytest.raises(TargetError, match="no attribute 'nope'"):
        mcmc.make_target("usertarget_mcmc:nope", 2)
    with pytest.raises(TargetError, match="not callable"):
        mcmc.make_target("usertarget_mcmc:not_callable", 2)
    with pytest.raises(TargetError, match="cannot import 'no_such_module_xyz'"):
        mcmc.make_target("no_such_module_xyz:f", 2)
    with pytest.raises(TargetError, match="module:function"):
        mcmc.make_target("usertarget_mcmc:", 2)
