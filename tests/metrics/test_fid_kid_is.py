"""FID, KID and IS against hand-written references (scipy sqrtm, numpy loops, closed forms)
and, when installed, torchmetrics fed the same features through an identity module."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from stablegen.metrics.fid import fid, frechet_distance, mean_cov
from stablegen.metrics.inception_score import inception_score, joint_class_probs
from stablegen.metrics.kid import kid, mmd2_unbiased


def _features(seed, n=300, d=12, shift=0.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / math.sqrt(d)
    return torch.from_numpy(rng.normal(size=(n, d)) @ mix + shift)


def _fid_reference(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_matches_scipy_sqrtm_reference():
    real, fake = _features(0), _features(1, n=250, shift=0.3)
    ref = _fid_reference(real.numpy(), fake.numpy())
    assert ref > 0.5
    assert fid(real, fake) == pytest.approx(ref, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_symmetric():
    real, fake = _features(2), _features(3)
    assert fid(real, real) == pytest.approx(0.0, abs=1e-9)
    assert fid(real, fake) == pytest.approx(fid(fake, real), rel=1e-9)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    # commuting covariances: FID = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = 1 + 4 + (1 - 3) ** 2 + (2 - 1) ** 2
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_fid_with_fewer_samples_than_features_is_finite():
    real, fake = _features(4, n=20, d=40), _features(5, n=30, d=40)
    value = fid(real, fake)
    assert math.isfinite(value) and value > 0
    mu, cov = mean_cov(real)
    assert torch.linalg.matrix_rank(cov) < 40  # the rank-deficient case really is exercised


def _mmd2_reference(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_unbiased_mmd_matches_numpy_loops():
    x, y = _features(6, n=7, d=4), _features(7, n=9, d=4, shift=0.5)
    assert mmd2_unbiased(x, y) == pytest.approx(_mmd2_reference(x.numpy(), y.numpy()), rel=1e-10)


def test_kid_with_whole_sets_as_subsets_equals_the_full_estimate():
    x, y = _features(8, n=40, d=5), _features(9, n=40, d=5, shift=0.2)
    mean, std = kid(x, y, subsets=3, subset_size=1000, generator=torch.Generator().manual_seed(0))
    assert mean == pytest.approx(mmd2_unbiased(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_near_zero_for_same_distribution_and_positive_for_shifted():
    g = torch.Generator().manual_seed(0)
    x, y, z = _features(10, n=600, d=8), _features(11, n=600, d=8), _features(12, n=600, d=8, shift=1.0)
    same, same_std = kid(x, y, subsets=20, subset_size=300, generator=g)
    shifted, _ = kid(x, z, subsets=20, subset_size=300, generator=g)
    # _features(seed) draws a different random mixing matrix per seed, so x and y differ a little;
    # a 1.0 shift in all 8 dims moves the kernel mean embedding far more than that
    assert shifted > 10 * abs(same)
    assert same_std > 0


def test_inception_score_extremes():
    k = 10
    confident_uniform = torch.eye(k).repeat(5, 1)  # each class equally often, each prediction certain
    assert inception_score(confident_uniform, splits=1)[0] == pytest.approx(k, rel=1e-12)
    # random splits of 10 hold some classes twice: the score drops below K but stays above 1
    assert 1 < inception_score(confident_uniform, splits=5)[0] < k
    constant = torch.full((50, k), 1.0 / k)  # no information: IS = 1
    assert inception_score(constant, splits=5) == pytest.approx((1.0, 0.0), abs=1e-12)
    collapsed = torch.zeros(50, k)
    collapsed[:, 3] = 1  # certain but always the same class: IS = 1, no nan from 0 log 0
    assert inception_score(collapsed, splits=5)[0] == pytest.approx(1.0, abs=1e-12)


def test_joint_class_probs_of_stacked_channels():
    logits = torch.randn(4, 3, 10, generator=torch.Generator().manual_seed(0))
    joint = joint_class_probs(logits)
    p = logits.double().softmax(-1)
    assert joint.shape == (4, 1000)
    assert joint[:, 123] == pytest.approx((p[:, 0, 1] * p[:, 1, 2] * p[:, 2, 3]).tolist(), rel=1e-12)
    assert joint.sum(1) == pytest.approx([1.0] * 4, rel=1e-12)


class _Identity(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x


@pytest.mark.filterwarnings("ignore::UserWarning")  # torchmetrics: "features kept in buffer", std of 1 split
def test_agrees_with_torchmetrics_on_identical_features():
    pytest.importorskip("torchmetrics")
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _features(13, n=120, d=6), _features(14, n=120, d=6, shift=0.4)
    m = FrechetInceptionDistance(feature=_Identity(6))
    m.update(real, real=True)
    m.update(fake, real=False)
    assert fid(real, fake) == pytest.approx(float(m.compute()), rel=1e-6)

    k = KernelInceptionDistance(feature=_Identity(6), subsets=2, subset_size=120)
    k.update(real, real=True)
    k.update(fake, real=False)
    assert mmd2_unbiased(real, fake) == pytest.approx(float(k.compute()[0]), rel=1e-8)

    logits = torch.randn(60, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = InceptionScore(feature=_Identity(10), splits=1)
    s.update(logits)
    assert inception_score(logits.softmax(1), splits=1)[0] == pytest.approx(float(s.compute()[0]), rel=1e-8)
