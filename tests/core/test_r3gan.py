"""R3GAN (Huang et al. 2024): the relativistic pairing loss, R1 + R2, and the cosine decay of gamma."""

import math

import pytest
import torch

from stablegen.base import Batch, DataInfo
from stablegen.methods.gan import GanConfig, build, gamma_factor

VEC = DataInfo("ring8", "vector", (2,))


def gan(**kw):
    torch.manual_seed(0)
    return build(GanConfig(**{"width": 32, "depth": 2, "z_dim": 8, "loss": "relativistic"} | kw), VEC)


def sp(v: float) -> float:  # softplus by hand
    return math.log1p(math.exp(v))


def _fixed_nets(m, fake: torch.Tensor):
    """D(x) = x[:, 0] and G(z) = `fake`: the critic's verdicts are the first coordinates."""
    m.D.forward = lambda x, y=None: x[:, 0]  # noqa: E731
    m.G.forward = lambda z, y=None: fake  # noqa: E731


def test_pairing_losses_match_a_hand_computation():
    """L_D = softplus(D(fake_i) - D(real_i)), L_G = softplus(D(real_i) - D(fake_i)), pair by pair."""
    m = gan()
    real = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    fake = torch.tensor([[0.5, 0.0], [-3.0, 0.0]])
    _fixed_nets(m, fake)
    loss_d, logs = m.d_loss(Batch(real), 0)
    assert loss_d.tolist() == pytest.approx([sp(0.5 - 2.0), sp(-3.0 + 1.0)])  # 0.20141, 0.12693
    assert loss_d.tolist() == pytest.approx([0.2014133, 0.1269280], abs=1e-6)
    loss_g, _ = m.g_loss(Batch(real), 0)
    assert loss_g.tolist() == pytest.approx([sp(1.5), sp(2.0)])  # 1.70141, 2.12693
    assert m.health()["d_acc"] == 1.0  # both pairs ranked right, though D(fake_0) > 0


def test_pairing_loss_gradients_in_the_critic_outputs():
    """d L_D / d D(real) = -sigmoid(D(fake) - D(real)) = -d L_D / d D(fake); G's loss pushes
    D(fake) up by sigmoid(D(real) - D(fake)). The loss sees only the difference."""
    m = gan()
    d_real = torch.tensor([2.0, -1.0, 0.0], requires_grad=True)
    d_fake = torch.tensor([0.5, -3.0, 4.0], requires_grad=True)
    g_real, g_fake = torch.autograd.grad(m.critic_loss(d_real, d_fake).sum(), (d_real, d_fake))
    s = torch.sigmoid(d_fake - d_real).detach()
    assert torch.allclose(g_real, -s) and torch.allclose(g_fake, s)
    assert torch.allclose(m.critic_loss(d_real + 7.0, d_fake + 7.0), m.critic_loss(d_real, d_fake))
    fake = torch.tensor([[0.5, 0.0], [-3.0, 0.0], [4.0, 0.0]], requires_grad=True)
    _fixed_nets(m, fake)
    loss_g, _ = m.g_loss(Batch(torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])), 0)
    (g,) = torch.autograd.grad(loss_g.sum(), fake)
    assert torch.allclose(g[:, 0], -torch.sigmoid(d_real - d_fake).detach())


def test_gamma_schedule_values():
    """Cosine from 1 to gamma_end over gamma_steps, then constant (R3GAN's presets: 10x down)."""
    assert [gamma_factor(s, "cosine", 0.1, 100) for s in (0, 25, 50, 100, 500)] == pytest.approx(
        [1.0, 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2, 0.55, 0.1, 0.1])
    assert gamma_factor(10**6, "constant", 0.1, 0) == 1.0
    with pytest.raises(ValueError, match="gamma_steps >= 1"):
        GanConfig(gamma_schedule="cosine")


def test_r1_r2_weights_follow_the_schedule():
    """At step 50 of 100 (factor 0.55) the penalties add 0.55 gamma/2 (R1 + R2) to the loss."""
    m = gan(r1_weight=2.0, r2_weight=2.0, gamma_schedule="cosine", gamma_steps=100)
    plain = gan()
    batch = Batch(torch.randn(16, 2))
    torch.manual_seed(1)
    with_pen, logs = m.d_loss(batch, 50)
    torch.manual_seed(1)
    without, _ = plain.d_loss(batch, 50)
    assert logs["gamma_factor"].item() == pytest.approx(0.55)
    penalty = 0.55 * 2.0 / 2 * (logs["r1"] + logs["r2"])
    assert torch.allclose(with_pen.mean() - without.mean(), penalty, rtol=1e-4)


def test_relativistic_loss_refuses_ada():
    with pytest.raises(ValueError, match="relativistic loss leaves"):
        GanConfig(loss="relativistic", augment="ada")


def _train_ring8(seed: int, gamma: float, lr: float, steps: int) -> tuple[float, float]:
    """RpGAN on ring8 with Adam at `lr`; returns (share of 1000 samples within 0.1 of a mode,
    mean |grad D| at real data)."""
    from stablegen.data.toys import mixture_means, sample_toy

    torch.manual_seed(seed)
    m = build(GanConfig(width=64, depth=2, z_dim=2, loss="relativistic", r1_weight=gamma, r2_weight=gamma), VEC)
    data = torch.Generator().manual_seed(seed)
    opts = [torch.optim.Adam(p.params, lr=lr, betas=(0.5, 0.99)) for p in m.phases()]
    for step in range(steps):
        x = sample_toy("ring8", 128, data)
        for phase, opt in zip(m.phases(), opts):
            opt.zero_grad()
            phase.loss(Batch(x), step)[0].mean().backward()
            opt.step()
    s = m.sample(1000, generator=torch.Generator().manual_seed(1))
    near = (torch.cdist(s, mixture_means("ring8")).min(1).values < 0.1).float().mean().item()
    xr = sample_toy("ring8", 512, data).requires_grad_(True)
    (g,) = torch.autograd.grad(m.D(xr).sum(), xr)
    return near, g.norm(dim=1).mean().item()


def test_r1_r2_keep_the_relativistic_critic_from_diverging_on_ring8():
    """Mescheder et al. 2018 / Huang et al. 2024 (sec. 2.2): unregularized, the critic does not
    settle at the equilibrium, where it is flat on the data; its gradient at the reals keeps
    growing. Measured (lr 1e-2, 500 steps, seeds 0-2): mean |grad D(real)| 3.8, 4.1, 5.6 without
    penalties (1.7-3.5 at 300 steps, 7.9-8.7 at 1000) and 0.38-0.42 with R1 + R2 at gamma 0.05;
    asserted > 2.5 and < 1. Sample quality at this budget is not what is tested: the share of
    samples within 0.1 of a mode was 0.36-0.55 without and 0.14-0.25 with the penalties."""
    for seed in range(3):
        _, plain = _train_ring8(seed, gamma=0.0, lr=1e-2, steps=500)
        _, penalized = _train_ring8(seed, gamma=0.05, lr=1e-2, steps=500)
        assert plain > 2.5 and penalized < 1.0, (seed, plain, penalized)
