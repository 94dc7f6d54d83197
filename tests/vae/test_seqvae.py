"""Sequence VAE (Bowman et al. 2016): contract, word dropout, annealing, interpolation, learning."""

from __future__ import annotations

import pytest
import torch

from stablegen.base import Batch, DataInfo, has_capability
from stablegen.data.sequences import BOS, EOS, GRAMMAR_VOCAB, PAD, UNK, grammar_tokens, is_grammatical, sines
from stablegen.methods.scoring import score
from stablegen.methods.seqvae import SeqVaeConfig, build
from stablegen.methods.vae import kl_weight

T = 10
SINES = DataInfo("sines", "sequence", (T, 1))
GRAMMAR = DataInfo("grammar", "tokens", (T,), vocab_size=len(GRAMMAR_VOCAB))
SMALL = dict(z_dim=4, hidden=16, embed_dim=8)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def data(info: DataInfo, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return sines(n, T, g) if info.kind == "sequence" else grammar_tokens(n, T, g)


@pytest.mark.parametrize("info", [SINES, GRAMMAR], ids=["reals", "tokens"])
def test_contract(info):
    m = build(SeqVaeConfig(**SMALL), info)
    x = data(info, 6)
    (phase,) = m.phases()
    loss, logs = phase.loss(Batch(x), 0)
    assert loss.shape == (6,) and torch.isfinite(loss).all()
    assert {"rec", "kl", "kl_weight", "elbo"} <= logs.keys()
    loss.mean().backward()
    assert all(p.grad is not None for p in phase.params)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    s = m.sample(5, generator=g())
    assert s.shape == (5, *info.shape) and torch.equal(s, m.sample(5, generator=g()))
    assert s.dtype == (torch.int64 if info.kind == "tokens" else torch.float32)
    assert m.reconstruct(x).shape == x.shape
    lp = m.log_prob(x, k=4, generator=g())
    assert lp.shape == (6,) and torch.isfinite(lp).all()
    assert m.log_prob_is_discrete is (info.kind == "tokens")
    assert all(has_capability(m, c) for c in ("log_prob", "reconstruct", "health"))
    assert set(m.health()) == {"active_units", "active_fraction", "kl"}


def test_token_samples_respect_pad_bos_eos():
    m = build(SeqVaeConfig(**SMALL), GRAMMAR)  # untrained: tokens drawn nearly uniformly
    s = m.sample(300, generator=torch.Generator().manual_seed(0)).tolist()
    for row in s:
        end = row.index(EOS) if EOS in row else len(row)
        assert all(t not in (PAD, BOS, UNK) for t in row[:end])
        assert all(t == PAD for t in row[end + 1:])
    assert any(EOS in row for row in s)


def test_word_dropout_replaces_token_inputs_by_unk():
    p = 0.3
    m = build(SeqVaeConfig(word_dropout=p, **SMALL), GRAMMAR)
    x = data(GRAMMAR, 600)
    torch.manual_seed(0)
    inp = m.decoder_inputs(x, train=True)
    clean = m.decoder_inputs(x, train=False)
    assert torch.equal(clean[:, 0], torch.full((600,), BOS)) and torch.equal(clean[:, 1:], x[:, :-1])
    assert torch.equal(inp[:, 0], clean[:, 0])  # BOS is never dropped
    dropped = inp[:, 1:] == UNK
    assert torch.equal(inp[:, 1:][~dropped], clean[:, 1:][~dropped])
    # 600 x 9 Bernoulli(0.3) draws: the share is within 0.025 of p (4 standard errors, SE = 0.0062)
    assert abs(dropped.float().mean().item() - p) < 0.025
    assert UNK not in clean


def test_step_dropout_zeroes_real_inputs_and_sets_the_flag():
    p = 0.5
    m = build(SeqVaeConfig(word_dropout=p, **SMALL), SINES)
    x = data(SINES, 400)
    clean = m.decoder_inputs(x, train=False)  # (B, T, 2): previous value, "no input" flag
    assert torch.equal(clean[:, 1:, 0], x[:, :-1, 0]) and torch.all(clean[:, 0] == torch.tensor([0.0, 1.0]))
    assert torch.all(clean[:, 1:, 1] == 0)
    torch.manual_seed(0)
    inp = m.decoder_inputs(x, train=True)
    flagged = inp[:, 1:, 1] == 1
    assert torch.all(inp[:, 1:, 0][flagged] == 0)
    assert torch.equal(inp[:, 1:, 0][~flagged], x[:, :-1, 0][~flagged])
    # 400 x 9 Bernoulli(0.5) draws: within 0.035 of p (4 standard errors, SE = 0.0083)
    assert abs(flagged.float().mean().item() - p) < 0.035
    off = build(SeqVaeConfig(word_dropout=0.0, **SMALL), SINES)
    assert torch.equal(off.decoder_inputs(x, train=True), clean)


def test_kl_annealing_in_the_loss():
    cfg = SeqVaeConfig(anneal="cyclical", anneal_steps=80, beta=2.0, **SMALL)
    m = build(cfg, SINES)
    x = data(SINES, 4)
    for step in (0, 5, 10, 30, 79, 80):
        _, logs = m.loss(Batch(x), step)
        assert logs["kl_weight"].item() == pytest.approx(kl_weight(step, 2.0, "cyclical", 80))
    assert kl_weight(5, 2.0, "cyclical", 80) == pytest.approx(1.0)  # 5 / (0.5 * 20) of the way up


@pytest.mark.parametrize("info", [SINES, GRAMMAR], ids=["reals", "tokens"])
def test_interpolation_endpoints_are_the_reconstructions(info):
    m = build(SeqVaeConfig(**SMALL), info)
    x = data(info, 2)
    path = m.interpolate(x[0], x[1], 5)
    assert path.shape == (5, *info.shape)
    rec = m.reconstruct(x)
    if info.kind == "tokens":
        assert torch.equal(path[0], rec[0]) and torch.equal(path[-1], rec[1])
    else:
        assert torch.allclose(path[0], rec[0], atol=1e-5) and torch.allclose(path[-1], rec[1], atol=1e-5)
    with pytest.raises(ValueError, match="steps >= 2"):
        m.interpolate(x[0], x[1], 1)


def test_build_rejects_other_data():
    with pytest.raises(ValueError, match="vocabulary"):
        build(SeqVaeConfig(), DataInfo("t", "tokens", (T,), vocab_size=None))
    with pytest.raises(ValueError, match="family: vae"):
        build(SeqVaeConfig(), DataInfo("digits", "image", (1, 8, 8)))


def test_learns_the_grammar():
    """200 steps on the grammar: most samples become grammatical (an untrained decoder draws
    near-uniform tokens: ~0 % valid). Observed ~90 %; the 60 % bar leaves room for noise."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    info = DataInfo("grammar", "tokens", (8,), vocab_size=len(GRAMMAR_VOCAB))
    x = grammar_tokens(1000, 8, g)
    m = build(SeqVaeConfig(z_dim=4, hidden=32, embed_dim=16, anneal_steps=100), info)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for step in range(200):
        loss, _ = m.loss(Batch(x[torch.randint(1000, (32,), generator=g)]), step)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    s = m.sample(200, generator=torch.Generator().manual_seed(1))
    assert sum(is_grammatical(row) for row in s) / 200 > 0.6
    # anomaly scores: shuffled sentences (word order broken) score worse than real ones
    real = x[:50]
    shuffled = real.clone()
    for row in shuffled:
        n = int((row == EOS).nonzero()[0])
        row[:n] = row[:n].flip(0)
    nll_real, nll_bad = score(m, real, "nll"), score(m, shuffled, "nll")
    assert nll_bad.mean() > nll_real.mean() + 2.0
