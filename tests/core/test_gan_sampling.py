"""Jacobian truncation and top-k generator updates do what their papers say."""

import math

import pytest
import torch

from stablegen.base import Batch, DataInfo
from stablegen.methods.gan import GanConfig, build
from stablegen.methods.jacobian_truncation import log_volume, truncated_latents

VEC = DataInfo("grid25", "vector", (2,))


@pytest.mark.parametrize("d_in,d_out", [(2, 2), (2, 3), (3, 2)])
def test_log_volume_of_a_linear_map(d_in, d_out):
    # x = A z has the same volume element everywhere: |det A| when square, else the square
    # root of the determinant of the smaller Gram matrix (A^T A or A A^T)
    a = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(0))
    gram = a.T @ a if d_in <= d_out else a @ a.T
    expected = 0.5 * torch.logdet(gram.double()).item()
    lv = log_volume(lambda z: z @ a.T, torch.randn(5, d_in))
    assert lv.shape == (5,)
    assert torch.allclose(lv, torch.full((5,), expected, dtype=torch.float32), atol=1e-5)


def torn_generator(z):
    """Two sharp modes at x0 = +-2 joined by a bridge: a steep tanh sends the latents near
    z0 = 0 across the gap, stretching them ~100x more than the modes."""
    return torch.stack([2 * torch.tanh(8 * z[:, 0]) + 0.05 * z[:, 0], 0.05 * z[:, 1]], dim=1)


def test_truncation_drops_the_bridge_and_keeps_both_modes():
    g = torch.Generator().manual_seed(0)
    raw = torn_generator(torch.randn(20_000, 2, generator=g))
    z = truncated_latents(torn_generator, lambda b: torch.randn(b, 2, generator=g), 20_000, ratio=100)
    kept = torn_generator(z)
    in_gap = lambda x: (x[:, 0].abs() < 1.5).float().mean().item()  # noqa: E731
    # |x0| < 1.5 for |z0| < 0.122: 9.7 % of N(0, 1) draws. The volume element is
    # (16 sech^2(8 z0) + 0.05) * 0.05, 0.0026 at the median |z0| = 0.674, so 100x the median
    # rejects every |z0| < 0.147: the whole bridge, and none of it is kept
    assert in_gap(raw) > 0.09
    assert in_gap(kept) == 0
    assert abs((kept[:, 0] > 0).float().mean().item() - 0.5) < 0.02  # both modes, equal mass (sd 0.0035)
    assert kept.shape == (20_000, 2)


def test_gan_sampling_truncates_by_default_and_not_when_asked():
    torch.manual_seed(0)
    m = build(GanConfig(z_dim=2, width=16, depth=2, truncation="jacobian", truncation_ratio=2.0), VEC)
    x = m.sample(300, generator=torch.Generator().manual_seed(1))
    again = m.sample(300, generator=torch.Generator().manual_seed(1))
    raw = m.sample(300, generator=torch.Generator().manual_seed(1), truncate=False)
    assert torch.equal(x, again)  # seeded: reproducible
    assert torch.equal(raw, m.G(m.latent(300, torch.Generator().manual_seed(1))))
    # every kept latent's volume element is within the ratio of the burn-in median
    z = truncated_latents(m.G, lambda b: m.latent(b, torch.Generator().manual_seed(1)), 300, 2.0)
    lv = log_volume(m.G, z)
    ref = log_volume(m.G, m.latent(2048, torch.Generator().manual_seed(1))).median()
    assert (lv <= ref + math.log(2.0) + 1e-5).all()
    assert torch.allclose(x, m.G(z))


def test_truncation_is_refused_for_conditional_and_image_gans():
    with pytest.raises(ValueError, match="unconditional"):
        build(GanConfig(conditional=True, truncation="jacobian"), DataInfo("toy", "vector", (2,), num_classes=3))
    with pytest.raises(ValueError, match="needs net=mlp"):
        build(GanConfig(net="dcgan", truncation="jacobian"), DataInfo("digits", "image", (1, 8, 8)))


def test_topk_generator_loss_keeps_the_fakes_rated_most_real():
    # Sinha et al. 2020: G's loss uses only the k = max(nu, gamma^epoch) * B fakes with the
    # highest critic scores
    torch.manual_seed(0)
    m = build(GanConfig(z_dim=2, width=16, depth=2, topk=0.5, topk_decay=0.5, topk_interval=10), VEC)
    assert [m.topk_share(s) for s in (0, 9, 10, 25, 1000)] == [1.0, 1.0, 0.5, 0.5, 0.5]
    batch = Batch(torch.randn(64, 2), None)
    torch.manual_seed(1)
    full, _ = m.g_loss(batch, 0)  # share 1: every fake
    torch.manual_seed(1)
    top, logs = m.g_loss(batch, 10)
    assert full.shape == (64,) and top.shape == (32,) and float(logs["topk"]) == 0.5
    # the same fakes (same seed); hinge's G loss is -d, so the kept are the 32 smallest losses
    assert torch.allclose(top.sort().values, full.sort().values[:32])
