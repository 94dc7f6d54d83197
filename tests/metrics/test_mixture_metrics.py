"""Modes covered, high-quality rate and reverse KL on hand-made ring8 / grid25 samples."""

import math

import pytest
import torch

from stablegen.data.toys import mixture_means, mixture_std, sample_toy
from stablegen.metrics.mixtures import mixture_metrics


def test_three_of_eight_ring_modes():
    means, std = mixture_means("ring8"), mixture_std("ring8")
    g = torch.Generator().manual_seed(0)
    on_modes = means[[0, 2, 5]].repeat_interleave(10, 0)  # 10 points on each of 3 modes
    jitter = torch.randn(30, 2, generator=g).clamp(-1, 1) * std  # |offset| <= sqrt(2) std < 3 std
    far = torch.zeros(10, 2)  # the origin: distance 1 = 100 std from every mode, not HQ
    out = mixture_metrics(torch.cat([on_modes + jitter, far]), "ring8")
    assert out["modes"] == 3
    assert out["hq"] == pytest.approx(30 / 40)
    assert out["reverse_kl"] == pytest.approx(math.log(8 / 3), rel=1e-12)  # uniform on 3 of 8


def test_all_grid_modes_uniform_has_zero_reverse_kl():
    means = mixture_means("grid25")
    out = mixture_metrics(means.repeat(4, 1), "grid25")
    assert {k: out[k] for k in ("modes", "hq", "reverse_kl")} == pytest.approx(
        {"modes": 25, "hq": 1.0, "reverse_kl": 0.0}, abs=1e-12)


def test_hq_threshold_is_three_std():
    means, std = mixture_means("grid25"), mixture_std("grid25")
    inside = means[:1] + torch.tensor([[2.9 * std, 0.0]])
    outside = means[1:2] + torch.tensor([[3.1 * std, 0.0]])
    out = mixture_metrics(torch.cat([inside, outside]), "grid25")
    assert out["modes"] == 1 and out["hq"] == 0.5  # the outside point covers no mode


def test_no_hq_sample_gives_infinite_reverse_kl():
    out = mixture_metrics(torch.full((5, 2), 10.0), "ring8")
    assert out["modes"] == 0 and out["hq"] == 0 and out["reverse_kl"] == math.inf


def test_true_samples_cover_every_mode():
    x = sample_toy("ring8", 2500, torch.Generator().manual_seed(0))
    out = mixture_metrics(x, "ring8")
    # P(2-D Gaussian within 3 std) = 1 - exp(-4.5) = 0.989; over 2,500 draws the HQ share has
    # sd ~0.002, so >= 0.98 holds; ~312 draws per mode make the histogram KL ~ 7/(2*2500) ~ 0.0015
    assert out["modes"] == 8 and out["hq"] >= 0.98 and out["reverse_kl"] < 0.01


def test_not_a_mixture():
    with pytest.raises(ValueError, match="not a Gaussian mixture"):
        mixture_metrics(torch.zeros(3, 2), "moons")


@pytest.mark.parametrize("dataset", ["ring8", "grid25"])
def test_spread_is_one_on_the_data_and_tracks_the_width_of_the_modes(dataset):
    """The data scores spread 1.0 (exact reference; 20,000 samples: the RMS has a relative
    standard error of about 0.4 %, so 0.97-1.03 is over 7 standard errors); modes of half
    the width score 0.5 and still 100 % HQ, which is what the HQ rate alone could not see."""
    from stablegen.data.toys import mixture_means, mixture_std, sample_toy

    g = torch.Generator().manual_seed(0)
    x = sample_toy(dataset, 20_000, g)
    out = mixture_metrics(x, dataset)
    assert 0.97 < out["spread"] < 1.03 and out["hq"] > 0.98
    means, std = mixture_means(dataset), mixture_std(dataset)
    idx = torch.randint(len(means), (20_000,), generator=g)
    narrow = means[idx] + 0.5 * std * torch.randn(20_000, 2, generator=g)
    out = mixture_metrics(narrow, dataset)
    assert out["hq"] == 1.0 and 0.47 < out["spread"] < 0.53


def test_spread_is_nan_without_hq_samples():
    out = mixture_metrics(torch.full((10, 2), 100.0), "ring8")
    assert math.isnan(out["spread"])
