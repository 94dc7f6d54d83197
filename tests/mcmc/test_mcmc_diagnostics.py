"""Diagnostics: identical to ArviZ on the same chains; known answers on synthetic chains."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from stablegen import mcmc


def ar1_chains(rng: np.random.Generator, chains: int, draws: int, dim: int, phi: float) -> np.ndarray:
    """Stationary Gaussian AR(1) chains with unit marginal variance, (C, S, D)."""
    x = np.empty((chains, draws, dim))
    x[:, 0] = rng.normal(size=(chains, dim))
    e = rng.normal(size=(chains, draws, dim)) * np.sqrt(1 - phi**2)
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def arviz_values(az, x: np.ndarray) -> dict[str, np.ndarray]:
    """ArviZ's rhat and ess (bulk, tail, mean) of (C, S, D) draws, for the 0.x and 1.x APIs."""
    if hasattr(az, "convert_to_dataset") and hasattr(az, "ess"):
        try:
            ds = az.convert_to_dataset({"x": x})
            out = {m: np.asarray(az.ess(ds, method=m)["x"]) for m in ("bulk", "tail", "mean")}
            out["rhat"] = np.asarray(az.rhat(ds)["x"])
            return out
        except (TypeError, AttributeError, KeyError):
            pass
    stats = pytest.importorskip("arviz_stats")  # arviz 1.x keeps the array functions here
    a = np.moveaxis(x, 2, 0)  # (D, C, S): chain and draw as the last two axes
    try:
        array_stats = stats.base.array_stats
        out = {m: np.asarray(array_stats.ess(a, chain_axis=-2, draw_axis=-1, method=m))
               for m in ("bulk", "tail", "mean")}
        out["rhat"] = np.asarray(array_stats.rhat(a, chain_axis=-2, draw_axis=-1, method="rank"))
    except (AttributeError, TypeError) as e:
        pytest.skip(f"unrecognized arviz API ({type(e).__name__}: {e})")
    return out


def test_matches_arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az = pytest.importorskip("arviz")
    rng = np.random.default_rng(0)
    cases = [
        ar1_chains(rng, 4, 500, 3, 0.7),
        ar1_chains(rng, 2, 101, 2, -0.5),  # odd draws, anticorrelated
        ar1_chains(rng, 6, 60, 2, 0.97) + rng.normal(size=(6, 1, 2)),  # unmixed chains
        np.round(ar1_chains(rng, 3, 200, 2, 0.3)),  # ties in the ranks
        rng.standard_t(2, size=(4, 300, 2)),  # heavy tails
    ]
    for x in cases:
        ref = arviz_values(az, x)
        np.testing.assert_allclose(mcmc.ess_bulk(x), ref["bulk"], rtol=1e-9)
        np.testing.assert_allclose(mcmc.ess_tail(x), ref["tail"], rtol=1e-9)
        np.testing.assert_allclose(mcmc.ess_mean(x), ref["mean"], rtol=1e-9)
        np.testing.assert_allclose(mcmc.rhat(x), ref["rhat"], rtol=1e-12)


def test_mcse_matches_arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az = pytest.importorskip("arviz")
    if not hasattr(az, "mcse") or not hasattr(az, "convert_to_dataset"):
        pytest.skip("arviz without the 0.x mcse API")
    rng = np.random.default_rng(3)
    for x in (ar1_chains(rng, 4, 300, 2, 0.8), rng.standard_t(5, size=(3, 201, 2))):
        ds = az.convert_to_dataset({"x": x})
        for method, ours in (("mean", mcmc.mcse_mean), ("sd", mcmc.mcse_sd)):
            np.testing.assert_allclose(ours(x), np.asarray(az.mcse(ds, method=method)["x"]), rtol=1e-9)


def test_known_answers():
    rng = np.random.default_rng(1)
    iid = rng.normal(size=(4, 1000, 2))
    # iid draws: ESS ~ N (sd of the estimator ~ a few %), R-hat ~ 1
    assert np.all(np.abs(mcmc.ess_bulk(iid) / 4000 - 1) < 0.15)
    assert np.all(np.abs(mcmc.ess_tail(iid) / 4000 - 1) < 0.25)
    assert np.all(mcmc.rhat(iid) < 1.01)
    # AR(1): ESS of the mean = N (1 - phi) / (1 + phi)
    phi = 0.8
    x = ar1_chains(rng, 8, 2000, 2, phi)
    expected = 16000 * (1 - phi) / (1 + phi)
    assert np.all(np.abs(mcmc.ess_mean(x) / expected - 1) < 0.2)
    # chains stuck at different locations: R-hat far above 1
    shifted = iid + np.array([0.0, 0.0, 0.0, 2.0])[:, None, None]
    assert np.all(mcmc.rhat(shifted) > 1.1)
    # same location, different scales: only the folded (tail) R-hat sees it
    scaled = iid * np.array([1.0, 1.0, 1.0, 3.0])[:, None, None]
    assert np.all(mcmc.rhat(scaled) > 1.05)
    # torch input and a single dimension as (C, S)
    t = torch.as_tensor(iid[:, :, 0])
    np.testing.assert_allclose(mcmc.ess_bulk(t), mcmc.ess_bulk(iid)[:1])


def test_summarize_errors_and_efficiency():
    rng = np.random.default_rng(2)
    x = rng.normal(loc=1.0, scale=2.0, size=(4, 500, 2))
    s = mcmc.summarize(x, num_grad_evals=1000, seconds=2.0, true_mean=torch.ones(2),
                       true_std=2 * torch.ones(2))
    np.testing.assert_allclose(s["ess_bulk_per_gradient"], s["ess_bulk"] / 1000)
    np.testing.assert_allclose(s["ess_bulk_per_second"], s["ess_bulk"] / 2.0)
    assert np.all(s["mean_error"] < 5 / np.sqrt(2000)) and np.all(s["sd_error"] < 0.05)
    assert "mean_error" not in mcmc.summarize(x)
    # iid draws: MCSE of the mean sd / sqrt(N), of the sd about sd / sqrt(2 N)
    np.testing.assert_allclose(s["mcse_mean"], 2 / np.sqrt(2000), rtol=0.2)
    np.testing.assert_allclose(s["mcse_sd"], 2 / np.sqrt(4000), rtol=0.2)
    with pytest.raises(ValueError, match="chains, draws, dim"):
        mcmc.rhat(np.zeros(10))


def test_convergence_warnings_name_each_failed_check():
    good = dict(rhat=np.array([1.002, 1.004]), ess_bulk=np.array([900.0, 800.0]),
                ess_tail=np.array([700.0, 650.0]))
    assert mcmc.convergence_warnings(**good, num_divergent=0, num_transitions=8000) == []
    (w,) = mcmc.convergence_warnings(**{**good, "rhat": np.array([1.002, 1.03])}, num_divergent=0,
                                     num_transitions=8000)
    assert w.startswith("R-hat 1.030 > 1.01 (dimension 1)") and "--warmup" in w
    (w,) = mcmc.convergence_warnings(**{**good, "ess_tail": np.array([700.0, 120.0])},
                                     num_divergent=0, num_transitions=8000)
    assert w.startswith("tail ESS 120 (dimension 1) < 400") and "--samples" in w
    (w,) = mcmc.convergence_warnings(**good, num_divergent=8, num_transitions=8000)
    assert w.startswith("8 divergent transitions (0.1 % of draws)") and "--target-acceptance" in w
    nan = mcmc.convergence_warnings(np.array([np.nan]), np.array([np.nan]), np.array([np.nan]), 0, 10)
    assert len(nan) == 2  # a constant chain: R-hat and ESS undefined, so neither check passes
