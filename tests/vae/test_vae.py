"""VAE family: each switch does what its paper says, plus the method contract and scoring."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from stablegen.base import Batch, DataInfo, Method, MissingCapability, Phase, has_capability
from stablegen.data.digits import benchmark_split, load_digits
from stablegen.methods.scoring import score
from stablegen.methods.vae import (
    VAE, VaeConfig, active_units, build, discretized_logistic_log_lik, free_bits_kl, gaussian_kl,
    gaussian_log_lik, iwae_bound, kl_weight,
)
from stablegen.metrics.likelihood import bits_per_dim
from stablegen.nets.vae_nets import MLPDecoder

DIGITS = DataInfo("digits", "image", (1, 8, 8), levels=17)
VECTORS = DataInfo("vec", "vector", (4,))


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# ---- KL weight schedules -------------------------------------------------------------------


def test_linear_anneal():
    assert kl_weight(0, 2.0, "linear", 100) == 0.0
    assert kl_weight(25, 2.0, "linear", 100) == pytest.approx(0.5)
    assert kl_weight(100, 2.0, "linear", 100) == 2.0
    assert kl_weight(10_000, 2.0, "linear", 100) == 2.0
    assert kl_weight(0, 2.0, "none", 100) == 2.0


def test_cyclical_anneal_values_at_known_steps():
    # Fu et al. 2019: 4 cycles over 400 steps (period 100), rising over the first half (R = 0.5)
    w = lambda s: kl_weight(s, 1.0, "cyclical", 400, cycles=4, ratio=0.5)  # noqa: E731
    assert [w(s) for s in (0, 25, 50, 75, 99)] == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0])
    assert [w(s) for s in (100, 125, 150)] == pytest.approx([0.0, 0.5, 1.0])
    assert [w(s) for s in (300, 310, 349, 350)] == pytest.approx([0.0, 0.2, 0.98, 1.0])
    assert w(400) == 1.0 and w(5000) == 1.0  # full weight after the cycles
    assert kl_weight(125, 4.0, "cyclical", 400) == pytest.approx(2.0)  # scaled by beta


def test_anneal_reaches_the_loss_through_step():
    m = build(VaeConfig(anneal="linear", anneal_steps=200, width=16), VECTORS)
    x = torch.randn(8, 4)
    _, logs = m.loss(Batch(x), 50)
    assert logs["kl_weight"].item() == pytest.approx(0.25)


def test_beta_scales_the_kl_term():
    base = VaeConfig(anneal="none", beta=1.0, width=16)
    m1 = build(base, VECTORS)
    m3 = build(base.model_copy(update={"beta": 3.0}), VECTORS)
    m3.load_state_dict(m1.state_dict())
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    l1, _ = m1.loss(Batch(x), 0)
    torch.manual_seed(1)  # same reparameterization noise
    l3, _ = m3.loss(Batch(x), 0)
    kl = gaussian_kl(*m1.encode(x)).sum(dim=1)
    assert torch.allclose(l3 - l1, 2.0 * kl, atol=1e-5)


def test_unknown_choices_fail_early():
    with pytest.raises(ValidationError, match="anneal"):
        VaeConfig(anneal="cosine")
    with pytest.raises(ValidationError, match="decoder"):
        VaeConfig(decoder="poisson")
    with pytest.raises(ValidationError):
        VaeConfig(bogus=1)
    with pytest.raises(ValueError, match="decoder=logistic needs discrete data"):
        build(VaeConfig(decoder="logistic"), VECTORS)
    with pytest.raises(ValueError, match="net=conv needs image data"):
        build(VaeConfig(net="conv"), VECTORS)
    with pytest.raises(ValueError, match="seqvae"):
        build(VaeConfig(), DataInfo("sines", "sequence", (16, 1)))


# ---- free bits -----------------------------------------------------------------------------


def test_free_bits_floor_blocks_gradient_below_floor():
    # dimension 0 carries KL 2.0 per sample (above the floor 0.5), dimension 1 about 0.005 (below)
    mu = torch.tensor([[2.0, 0.1], [-2.0, -0.1], [2.0, 0.1]], requires_grad=True)
    logvar = torch.zeros(3, 2, requires_grad=True)
    kl = gaussian_kl(mu, logvar)
    term = free_bits_kl(kl, 0.5)
    term.sum().backward()
    assert torch.all(mu.grad[:, 1] == 0) and torch.all(logvar.grad[:, 1] == 0)
    assert torch.all(mu.grad[:, 0] != 0)
    # batch mean of the term = sum_j max(floor, mean_batch KL_j)  (Kingma et al. 2016, eq. 17)
    expect = torch.clamp(kl.detach().mean(dim=0), min=0.5).sum()
    assert term.mean().item() == pytest.approx(expect.item())
    assert torch.equal(free_bits_kl(kl, 0.0), kl.sum(dim=1))


def test_free_bits_switch_in_the_loss():
    # every dimension below a floor of 100 nats: the KL adds the constant z_dim * floor, and the
    # gradients are those of the reconstruction term alone (the same as with beta = 0)
    floored = build(VaeConfig(anneal="none", free_bits=100.0, width=16), VECTORS)
    no_kl = build(VaeConfig(anneal="none", beta=0.0, width=16), VECTORS)
    no_kl.load_state_dict(floored.state_dict())
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    grads = []
    for m in (floored, no_kl):
        torch.manual_seed(1)
        loss, logs = m.loss(Batch(x), 0)
        loss.mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert loss.mean().item() == pytest.approx(logs["rec"].item())  # last: beta = 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


# ---- likelihoods ---------------------------------------------------------------------------


def test_discretized_logistic_is_normalized_over_the_levels():
    levels = 17
    grid = torch.linspace(-1, 1, levels).view(levels, 1)  # every level, one dimension
    for mean, log_scale in [(0.3, -2.0), (-0.9, -4.0), (5.0, -3.0), (0.0, 1.0), (-1.0, -7.0)]:
        lp = discretized_logistic_log_lik(grid, torch.full_like(grid, mean), torch.full_like(grid, log_scale),
                                          levels)
        assert torch.isfinite(lp).all()
        assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_gaussian_log_lik_matches_torch():
    x, mean, ls = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5) * 0.3
    ref = torch.distributions.Normal(mean, ls.exp()).log_prob(x).sum(dim=1)
    assert torch.allclose(gaussian_log_lik(x, mean, ls), ref, atol=1e-5)


# ---- contract: shapes, gradients, capabilities ---------------------------------------------


@pytest.mark.parametrize("net, decoder, discrete", [
    ("mlp", "logistic", True), ("conv", "logistic", True), ("mlp", "gaussian", False),
    ("conv", "bernoulli", True), ("mlp", "auto", True),
])
def test_contract(net, decoder, discrete):
    m = build(VaeConfig(net=net, decoder=decoder, width=8, z_dim=4), DIGITS)
    assert m.log_prob_is_discrete is discrete
    x = load_digits()[0][:6]
    phases = m.phases()
    assert [p.name for p in phases] == ["main"] and isinstance(phases[0], Phase)
    loss, logs = phases[0].loss(Batch(x), 3)
    assert loss.shape == (6,) and torch.isfinite(loss).all()
    assert {"rec", "kl", "kl_weight", "elbo"} <= logs.keys()
    loss.mean().backward()
    assert all(p.grad is not None for p in phases[0].params)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    s = m.sample(7, generator=g())
    assert s.shape == (7, 1, 8, 8) and torch.equal(s, m.sample(7, generator=g()))
    assert m.sample(3, generator=g(), noise=True).shape == (3, 1, 8, 8)
    assert m.reconstruct(x).shape == x.shape
    assert all(has_capability(m, c) for c in ("log_prob", "reconstruct", "health"))
    xb = torch.where(x > 0, 1.0, -1.0) if decoder == "bernoulli" else x
    lp = m.log_prob(xb, k=3, generator=g())
    assert lp.shape == (6,) and torch.isfinite(lp).all()


def test_bernoulli_log_prob_refuses_grey_levels():
    m = build(VaeConfig(decoder="bernoulli", width=8), DIGITS)
    with pytest.raises(ValueError, match="binary"):
        m.log_prob(load_digits()[0][:2], k=2)


def test_logistic_noisy_samples_lie_on_the_levels():
    m = build(VaeConfig(width=8), DIGITS)
    s = m.sample(20, generator=torch.Generator().manual_seed(0), noise=True)
    lv = (s + 1) / 2 * 16
    assert torch.allclose(lv, lv.round(), atol=1e-4) and s.min() >= -1 and s.max() <= 1


# ---- IWAE bound ----------------------------------------------------------------------------


def test_iwae_k1_is_the_elbo_and_larger_k_is_tighter():
    torch.manual_seed(0)
    m = build(VaeConfig(width=32, z_dim=4, iwae_chunk=64), DIGITS)  # untrained: a loose ELBO
    x = load_digits()[0][:32]
    log_w = m.log_weights(x, 400, torch.Generator().manual_seed(1))  # (400, 32)
    # k = 1: the bound is the single log-weight itself, an unbiased estimate of the ELBO
    assert torch.allclose(iwae_bound(log_w[:1]), log_w[0])
    assert torch.allclose(m.log_prob(x, k=1, generator=torch.Generator().manual_seed(1)), log_w[0])
    with torch.no_grad():
        elbo = torch.stack([m.elbo(x, torch.Generator().manual_seed(100 + i)) for i in range(400)])
    # both are means of 400 draws of unbiased ELBO estimators: they agree within 4 standard errors
    se = (log_w.var(dim=0) / 400 + elbo.var(dim=0) / 400).sqrt()
    assert ((log_w.mean(dim=0) - elbo.mean(dim=0)).abs() <= 4 * se).all()
    # Burda et al. 2016, Theorem 1: E[IWAE_k] is non-decreasing in k. Compare the batch-mean
    # bound of 400 k=1, 40 disjoint k=10 and 4 k=100 estimates; the first gap exceeds 4 SE
    r1 = log_w.mean(dim=1)  # (400,)
    r10 = torch.stack([iwae_bound(c) for c in log_w.split(10)]).mean(dim=1)  # (40,)
    r100 = torch.stack([iwae_bound(c) for c in log_w.split(100)]).mean(dim=1)  # (4,)
    assert r10.mean() - r1.mean() > 4 * (r1.var() / 400 + r10.var() / 40).sqrt()
    assert r100.mean() > r10.mean()
    # the same 400 draws (same seed): log-mean-exp >= mean, per sample (Jensen), exactly
    assert (m.log_prob(x, k=400, generator=torch.Generator().manual_seed(1)) >= log_w.mean(dim=0) - 1e-4).all()


def test_iwae_chunking_does_not_change_the_bound():
    m = build(VaeConfig(width=16, z_dim=4, iwae_chunk=7), DIGITS)
    x = load_digits()[0][:5]
    a = m.log_weights(x, 300, torch.Generator().manual_seed(3))
    assert a.shape == (300, 5)
    m.opts = m.opts.model_copy(update={"iwae_chunk": 300})
    b = m.log_weights(x, 300, torch.Generator().manual_seed(4))
    # chunks of 7 vs one pass: the same distribution of log-weights; their means over 300 draws
    # agree within 4 standard errors
    se = (a.var(dim=0) / 300 + b.var(dim=0) / 300).sqrt()
    assert ((a.mean(dim=0) - b.mean(dim=0)).abs() <= 4 * se).all()


# ---- active units --------------------------------------------------------------------------


class _FixedEncoder(nn.Module):
    """mu = (x0, 0.05 x1, 0.2 x2), logvar = 0: Cov_x(mu) = (1, 0.0025, 0.04) for x ~ N(0, I)."""

    def forward(self, x):
        mu = torch.stack([x[:, 0], 0.05 * x[:, 1], 0.2 * x[:, 2]], dim=1)
        return torch.cat([mu, torch.zeros_like(mu)], dim=1)


def test_active_units_on_a_hand_built_encoder():
    cfg = VaeConfig(z_dim=3, width=8)
    m = VAE(cfg, VECTORS, _FixedEncoder(), MLPDecoder(3, (4,), 2, 8, 1))
    assert m.health() == {}  # nothing measured before the first step
    x = torch.randn(2000, 4, generator=torch.Generator().manual_seed(0))
    _, logs = m.loss(Batch(x), 0)
    h = m.health()
    # variances 1 and 0.04 are > 0.01, 0.0025 is not; with 2,000 samples the estimates are
    # within ~3 % of the truth (SE of a variance is sqrt(2/n) relative), far from the threshold
    assert h["active_units"] == 2.0 and h["active_fraction"] == pytest.approx(2 / 3)
    assert h["kl"] == pytest.approx(logs["kl"].item())
    assert active_units(torch.zeros(1, 3)).item() == 0


# ---- learning and scoring ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    """A logistic-decoder VAE trained for 400 steps on the digits' train split (~2 s)."""
    torch.manual_seed(0)
    x, _ = load_digits()
    tr, _, te = benchmark_split()
    m = build(VaeConfig(width=128, anneal_steps=200), DIGITS)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(400):
        loss, _ = m.loss(Batch(x[tr][torch.randint(len(tr), (128,), generator=g)]), step)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    return m, x[te]


def test_training_beats_the_uniform_model(trained):
    m, x_test = trained
    lp = m.log_prob(x_test, k=20, generator=torch.Generator().manual_seed(0))
    bpd = bits_per_dim(lp, 64, continuous=not m.log_prob_is_discrete).mean().item()
    # uniform over 17 levels is log2(17) = 4.09 bits/dim; a VAE after 400 steps is near 2.3
    assert bpd < 3.0
    h = m.health()
    assert h["active_units"] >= 4 and h["kl"] > 1.0


def test_score_kinds(trained):
    m, x_test = trained
    x = x_test[:40]
    torch.manual_seed(0)
    nll = score(m, x, "nll", batch_size=16)
    torch.manual_seed(0)
    auto = score(m, x, batch_size=16)
    assert nll.shape == (40,) and torch.allclose(nll, auto)
    rec = score(m, x, "recon")
    assert torch.allclose(rec, (m.reconstruct(x) - x).square().flatten(1).mean(dim=1))
    # anomalies: uniform noise images score far worse than held-out digits, under both scores
    noise = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noise = ((noise + 1) * 8).round() / 8 - 1  # on the 17 levels
    assert score(m, noise, "nll").min() > nll.max()
    assert score(m, noise, "recon").median() > rec.median()
    with pytest.raises(ValueError, match="unknown score kind"):
        score(m, x, "mse")  # type: ignore[arg-type]
    assert m.training  # score restores the training mode


class _ReconOnly(Method):
    """A method with reconstruct but no log_prob: auto scoring must fall back to recon."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))

    def phases(self):
        return []

    def sample(self, n, *, generator=None, **kw):
        return torch.zeros(n, 2)

    def reconstruct(self, x):
        return self.w * x


def test_score_falls_back_to_reconstruction():
    m = _ReconOnly()
    x = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    assert torch.allclose(score(m, x), torch.tensor([0.25, 0.5]))
    with pytest.raises(MissingCapability, match="no log_prob"):
        score(m, x, "nll")
