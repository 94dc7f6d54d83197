"""Bernoulli-Bernoulli RBM (methods/rbm.py): free energy against the brute-force marginal,
exact log Z two ways, AIS against exact log Z, the CD loss gradient against the analytic CD
gradient, the Gibbs conditionals against the exact law, checkpoints, and a short training."""

from __future__ import annotations

import math

import pytest
import torch

from stablegen.base import Batch, DataInfo
from stablegen.data import load_dataset
from stablegen.methods.rbm import RBM, RbmConfig, build, exact_log_partition
from stablegen.recipe import DataConfig

torch.set_num_threads(1)


def states(d: int) -> torch.Tensor:
    """All 2^d binary vectors, (2^d, d)."""
    return ((torch.arange(2**d)[:, None] >> torch.arange(d)) & 1).float()


def tiny(d: int = 6, hidden: int = 4, scale: float = 1.0, seed: int = 0, **kw) -> RBM:
    """An RBM on (1, 1, d) 'images' with random weights of the given scale."""
    torch.manual_seed(seed)
    m = build(RbmConfig(hidden=hidden, **kw), DataInfo("toy", "image", (1, 1, d), levels=2))
    with torch.no_grad():
        m.W.normal_(0, scale)
        m.b.normal_(0, scale)
        m.c.normal_(0, scale)
    return m


def test_free_energy_is_the_brute_force_marginal():
    m = tiny(d=5, hidden=4)
    v, h = states(5), states(4)  # (32, 5), (16, 4)
    # -E(v, h) = b.v + c.h + v.W.h for every pair, then log sum over h
    neg_e = (v @ m.b)[:, None] + (h @ m.c)[None, :] + v @ m.W @ h.T  # (32, 16)
    with torch.no_grad():
        assert torch.allclose(-m.free_energy(v), torch.logsumexp(neg_e, 1), atol=1e-5)


def test_exact_log_z_over_hidden_states_equals_the_sum_over_visible_states():
    m = tiny(d=12, hidden=5)
    with torch.no_grad():
        over_v = torch.logsumexp(-m.free_energy(states(12)).double(), 0)
    assert float(exact_log_partition(m.W, m.b, m.c)) == pytest.approx(float(over_v), abs=1e-6)


def test_ais_matches_the_exact_log_z():
    """A 16-visible, 10-hidden RBM with N(0, 1) weights (far from its base-rate model), 100
    runs, 1,000 temperatures. AIS's log Z-hat = log mean w is consistent; its delta-method
    standard error (from the same weights) is ~0.01 here. We ask for |error| < 5 se + 0.01: a
    5-sigma normal bound, plus 0.01 for the small downward bias of log of a mean (Jensen;
    about var(w) / (2 M mean(w)^2) = se^2 / 2, far below 0.01). The se itself must be small, so
    the test cannot pass on a uselessly noisy estimate; the seed is fixed."""
    m = tiny(d=16, hidden=10)
    with torch.no_grad():
        m.base_bias.copy_(0.5 * m.b)
    exact = float(exact_log_partition(m.W, m.b, m.c))
    log_z, se = m.ais_log_partition(runs=100, betas=1000, generator=torch.Generator().manual_seed(1))
    assert float(se) < 0.05
    assert abs(float(log_z) - exact) < 5 * float(se) + 0.01, (float(log_z), exact, float(se))
    # too few temperatures on the same model: still finite, with a larger reported se
    _, se_short = m.ais_log_partition(runs=100, betas=10, generator=torch.Generator().manual_seed(1))
    assert float(se_short) > float(se)


def test_cd_loss_gradient_is_the_analytic_cd_gradient():
    m = tiny(d=6, hidden=4, scale=0.5, estimator="cd")
    g = torch.Generator().manual_seed(0)
    v_data = torch.bernoulli(torch.full((7, 6), 0.4), generator=g)
    v_model = torch.bernoulli(torch.full((5, 6), 0.6), generator=g)
    m.cd_loss(v_data, v_model).mean().backward()
    p_data, p_model = m.hidden_probs(v_data).detach(), m.hidden_probs(v_model).detach()
    # d loss / d theta = <dE/d theta>_data - <dE/d theta>_model with h at its conditional mean
    grad_w = -(v_data.T @ p_data / 7 - v_model.T @ p_model / 5)
    grad_b = -(v_data.mean(0) - v_model.mean(0))
    grad_c = -(p_data.mean(0) - p_model.mean(0))
    assert torch.allclose(m.W.grad, grad_w, atol=1e-6)
    assert torch.allclose(m.b.grad, grad_b, atol=1e-6)
    assert torch.allclose(m.c.grad, grad_c, atol=1e-6)


def test_pcd_training_loss_uses_and_advances_the_persistent_chains():
    m = tiny(d=6, hidden=4, scale=0.5, estimator="pcd", chains=9, k=2)
    before = m.chains.clone()
    x = torch.where(torch.rand(5, 1, 1, 6, generator=torch.Generator().manual_seed(0)) > 0.5, 1.0, -1.0)
    loss, logs = m.loss(Batch(x), 0)
    assert loss.shape == (5,) and "recon_error" in logs
    assert not torch.equal(m.chains, before) and set(m.chains.unique().tolist()) <= {0.0, 1.0}
    loss.mean().backward()
    v = (x.flatten(1) > 0).float()
    p_data, p_model = m.hidden_probs(v).detach(), m.hidden_probs(m.chains).detach()
    assert torch.allclose(m.W.grad, -(v.T @ p_data / 5 - m.chains.T @ p_model / 9), atol=1e-6)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    h = m.health()
    assert set(h) == {"recon_error", "hidden_mean", "weight_abs_max"} and 0 <= h["hidden_mean"] <= 1


def test_gibbs_chain_samples_the_exact_law():
    """4 visible, 3 hidden units: 16 visible states with exact probabilities exp(-F) / Z.
    20,000 independent chains after 30 sweeps (mixing of this tiny chain is fast): each
    state's frequency has sd sqrt(p (1 - p) / 20000) <= 0.0036, so 0.02 is over 5 sd."""
    m = tiny(d=4, hidden=3, scale=1.0)
    with torch.no_grad():
        p = torch.softmax(-m.free_energy(states(4)), 0)  # (16,)
        v = m.gibbs_chain(torch.zeros(20_000, 4), 30, torch.Generator().manual_seed(0))
    codes = (v * 2 ** torch.arange(4)).sum(1).long()
    freq = torch.bincount(codes, minlength=16).float() / len(codes)
    assert (freq - p).abs().max() < 0.02


def test_log_prob_is_normalized_and_samples_are_binary_images():
    m = tiny(d=8, hidden=5, log_z="exact")
    x = 2 * states(8).reshape(256, 1, 1, 8) - 1  # every binary image, in {-1, 1}
    lp = m.log_prob(x)
    assert lp.shape == (256,) and float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-6)  # F in float32
    m.eval()
    s = m.sample(6, generator=torch.Generator().manual_seed(0), steps=3)
    assert s.shape == (6, 1, 1, 8) and set(s.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(s, m.sample(6, generator=torch.Generator().manual_seed(0), steps=3))


def test_log_z_is_cached_until_the_weights_change():
    m = tiny(d=8, hidden=5, ais_runs=20, ais_betas=50)
    x = -torch.ones(2, 1, 1, 8)
    first = m.log_prob(x)
    assert torch.equal(first, m.log_prob(x))  # cached (and AIS is seeded: deterministic anyway)
    cached = m._log_z[1]
    with torch.no_grad():
        m.c.add_(1.0)
    m.log_prob(x)
    assert m._log_z[1] != cached


def test_checkpoint_round_trip_holds_chains_and_base_rates():
    data = load_dataset(DataConfig(name="digits", binarize=True, batch_size=32))
    torch.manual_seed(0)
    a = build(RbmConfig(hidden=16, chains=10, ais_runs=10, ais_betas=20), data.info)
    a.data_init(Batch(data.x[:32]))
    a.loss(Batch(data.x[:32]), 0)  # advances the chains
    state = {k: v.clone() for k, v in a.state_dict().items()}
    assert {"W", "b", "c", "chains", "base_bias"} <= set(state)
    torch.manual_seed(1)
    b = build(RbmConfig(hidden=16, chains=10, ais_runs=10, ais_betas=20), data.info)
    b.load_state_dict(state)
    assert torch.equal(a.log_prob(data.x[:4]), b.log_prob(data.x[:4]))
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(a.sample(4, generator=g(), steps=5), b.sample(4, generator=g(), steps=5))
    rng = torch.get_rng_state()
    la, _ = a.loss(Batch(data.x[32:64]), 1)
    torch.set_rng_state(rng)
    lb, _ = b.loss(Batch(data.x[32:64]), 1)
    assert torch.equal(la, lb) and torch.equal(a.chains, b.chains)


def test_build_needs_binary_images():
    with pytest.raises(ValueError, match="binarize"):
        build(RbmConfig(), DataInfo("digits", "image", (1, 8, 8), levels=17))
    with pytest.raises(ValueError, match="log_z=ais"):
        build(RbmConfig(hidden=64, log_z="exact"), DataInfo("digits", "image", (1, 8, 8), levels=2))


def test_short_pcd_training_raises_the_exact_likelihood():
    """16 hidden units (exact log Z): 300 PCD steps on binarized digits raise the mean exact
    log-likelihood of the training images above the initial model's, which data_init already
    makes the independent-pixel base-rate model (measured: -25.0 -> -21.5 nats per image; a coin
    per pixel would be -44.4; a wrong sign in the CD gradient lowers it instead)."""
    data = load_dataset(DataConfig(name="digits", binarize=True, split="train", batch_size=64))
    torch.manual_seed(0)
    m = build(RbmConfig(hidden=16, log_z="exact", chains=64), data.info)
    m.data_init(Batch(data.x[:64]))
    before = float(m.log_prob(data.x).mean())
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for i in range(300):
        loss, _ = m.loss(Batch(data.x[torch.randint(len(data.x), (64,), generator=g)]), i)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    after = float(m.log_prob(data.x).mean())
    assert after > before + 2, (before, after)
    assert math.isfinite(after) and after < 0
