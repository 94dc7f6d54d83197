"""The evaluate() entry point: keys, applicability errors, and end-to-end values on toy methods."""

import math

import pytest
import torch
from torch import nn

from stablegen.base import DataInfo, Method
from stablegen.data.digits import LEVELS, load_digits, stacked_digits
from stablegen.data.toys import mixture_means, sample_toy
from stablegen.metrics import METRICS, applicable_metrics, evaluate
from stablegen.metrics import digits_net as dc


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory):
    # one cache per test session (shared with test_digits_features.py): the classifier trains once
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STABLEGEN_CACHE", str(tmp_path_factory.getbasetemp() / "stablegen-cache"))
        dc._LOADED.clear()
        yield
        dc._LOADED.clear()


class Resampler(Method):
    """Draws its samples from a fixed set; records whether it was in train mode when sampling."""

    def __init__(self, data: torch.Tensor, info: DataInfo):
        super().__init__()
        self.data, self.info = data, info
        self.w = nn.Parameter(torch.zeros(()))
        self.sampled_in_train_mode = []

    def phases(self):
        return []

    def sample(self, n, *, generator=None, **kw):
        self.sampled_in_train_mode.append(self.training)
        return self.data[torch.randint(len(self.data), (n,), generator=generator)]


class UniformImages(Resampler):
    def log_prob(self, x):  # the uniform density on [-1, 1]^D
        return torch.full((len(x),), -math.prod(x.shape[1:]) * math.log(2.0), dtype=torch.float64)


class UniformLevels(Resampler):
    log_prob_is_discrete = True

    def log_prob(self, x):  # uniform over the 17 levels; must see the grid images themselves
        levels = (x + 1) / 2 * (LEVELS - 1)
        assert torch.allclose(levels, levels.round(), atol=1e-5)
        return torch.full((len(x),), -math.prod(x.shape[1:]) * math.log(LEVELS), dtype=torch.float64)


class StandardNormal(Resampler):
    def log_prob(self, x):
        return -0.5 * x.square().sum(1) - math.log(2 * math.pi)

    def reconstruct(self, x):
        return x + 0.1


RING = DataInfo(name="ring8", kind="vector", shape=(2,))
DIGITS = DataInfo(name="digits", kind="image", shape=(1, 8, 8), num_classes=10, levels=LEVELS)


def _ring(seed, n=2500):
    return sample_toy("ring8", n, torch.Generator().manual_seed(seed))


def test_ring8_from_a_perfect_sampler():
    method = Resampler(_ring(0), RING)
    method.train()
    out = evaluate(["modes", "prdc", "fid", "kid", "diversity"], method=method, fake=None, real=_ring(1),
                   dataset="ring8")
    assert set(out) == {"modes", "hq", "spread", "reverse_kl", "precision", "recall", "density", "coverage",
                        "fid", "kid", "kid_std", "diversity"}
    assert all(type(v) is float for v in out.values())
    # sampled in batches of 500, in eval mode; train mode restored afterwards
    assert method.training and method.sampled_in_train_mode == [False] * 5
    # two 2,500-point draws of the same mixture: 8 modes, HQ share ~0.989 (sd 0.002); FID and
    # KID are O(dim / N) ~ 1e-3; PRDC of equal distributions ~1 (density fluctuates most)
    assert out["modes"] == 8 and out["hq"] >= 0.98 and out["reverse_kl"] < 0.01
    assert out["fid"] < 0.02 and abs(out["kid"]) < 0.01
    assert min(out["precision"], out["recall"], out["coverage"]) > 0.9 and 0.8 < out["density"] < 1.2
    assert 0.9 < out["diversity"] < 1.1


def test_collapsed_generator_on_ring8():
    fake = mixture_means("ring8")[2] + 0.01 * torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    out = evaluate(["modes", "prdc", "diversity"], method=None, fake=fake, real=_ring(1), dataset="ring8")
    assert out["modes"] == 1 and out["reverse_kl"] == pytest.approx(math.log(8))
    # one of 8 modes: at most ~1/8 of the real balls can hold a fake point, pairwise distances
    # shrink from ~1.3 (across the ring) to ~0.018 (within one mode)
    assert out["coverage"] < 0.2 and out["recall"] < 0.2 and out["precision"] > 0.9
    assert out["diversity"] < 0.05


def test_results_are_reproducible_with_the_default_generator():
    method = Resampler(_ring(0), RING)
    a = evaluate(["kid", "prdc"], method=method, fake=None, real=_ring(1, 400), dataset="ring8")
    b = evaluate(["kid", "prdc"], method=method, fake=None, real=_ring(1, 400), dataset="ring8")
    assert a == b
    # each metric has its own generator: asking for more metrics does not change KID
    c = evaluate(["diversity", "kid"], method=method, fake=None, real=_ring(1, 400), dataset="ring8")
    assert c["kid"] == a["kid"]
    other = evaluate(["kid"], method=method, fake=None, real=_ring(1, 400), dataset="ring8",
                     generator=torch.Generator().manual_seed(1))
    assert other["kid"] != a["kid"]


def test_unknown_metric_suggests_a_name():
    with pytest.raises(ValueError, match="unknown metric 'fdi'; did you mean 'fid'"):
        evaluate(["fdi"], method=None, fake=_ring(0), real=_ring(1), dataset="ring8")


@pytest.mark.parametrize("name, dataset, match", [
    ("modes", "moons", "2-D mixtures"),
    ("nll", "ring8", "log_prob"),
    ("recon", "ring8", "reconstruct"),
    ("is", "ring8", "needs a classifier"),
    ("classes", "ring8", "single-channel digits"),
    ("stacked_modes", "ring8", "stacked-digits"),
])
def test_metrics_that_do_not_apply(name, dataset, match):
    with pytest.raises(ValueError, match=match) as err:
        evaluate([name], method=None, fake=_ring(0), real=_ring(1), dataset=dataset)
    assert "applicable here: fid, kid, prdc" in str(err.value)


def test_sample_metrics_need_fake_or_method():
    with pytest.raises(ValueError, match="needs generated samples"):
        evaluate(["fid"], method=None, fake=None, real=_ring(1), dataset="ring8")


def test_applicable_metrics_and_metric_names():
    assert set(METRICS) == {"fid", "kid", "is", "prdc", "modes", "classes", "stacked_modes", "nll", "recon",
                            "diversity"}
    method = StandardNormal(_ring(0), RING)
    assert applicable_metrics(dataset="ring8", real=_ring(1), method=method) == (
        "fid", "kid", "prdc", "modes", "nll", "recon", "diversity")
    assert evaluate([], method=None, fake=None, real=_ring(1), dataset="ring8") == {}


def test_bad_inputs():
    with pytest.raises(ValueError, match="did you mean 'pixels'"):
        evaluate(["fid"], method=None, fake=_ring(0), real=_ring(1), dataset="ring8", features="pixel")
    with pytest.raises(ValueError, match="use features='pixels'"):
        evaluate(["fid"], method=None, fake=_ring(0), real=_ring(1), dataset="ring8", features="digits")
    with pytest.raises(ValueError, match="shape"):
        evaluate(["fid"], method=None, fake=torch.zeros(10, 3), real=_ring(1), dataset="ring8")
    fake = _ring(0)
    fake[3] = float("nan")
    with pytest.raises(ValueError, match="1 of 2500 generated samples hold non-finite"):
        evaluate(["fid"], method=None, fake=fake, real=_ring(1), dataset="ring8")


def test_vector_nll_and_reconstruction():
    real, test = _ring(1, 300), _ring(2, 200)
    method = StandardNormal(real, RING)
    out = evaluate(["nll", "recon"], method=method, fake=None, real=real, real_test=test, dataset="ring8",
                   batch_size=64)
    expected = float((0.5 * test.double().square().sum(1) + math.log(2 * math.pi)).mean())
    assert out["nll"] == pytest.approx(expected, rel=1e-6) and "bpd" not in out
    assert out["recon"] == pytest.approx(0.01, rel=1e-5)  # reconstruct adds 0.1 to every coordinate


def test_image_bits_per_dim_of_a_model_that_knows_nothing():
    x, _ = load_digits()
    out = evaluate(["nll"], method=UniformImages(x, DIGITS), fake=None, real=x[:100], dataset="digits")
    assert out["bpd"] == pytest.approx(math.log2(17), abs=1e-9)
    assert out["nll"] == pytest.approx(64 * math.log(17), abs=1e-7)  # nats per image of the levels
    discrete = evaluate(["nll"], method=UniformLevels(x, DIGITS), fake=None, real=x[:100], dataset="digits")
    assert discrete["bpd"] == pytest.approx(math.log2(17), abs=1e-12)


def test_digits_quality_metrics(classifier_cache):
    x, y = load_digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    real, real_labels, fake = x[perm[:900]], y[perm[:900]], x[perm[900:1800]]
    out = evaluate(["fid", "kid", "is", "prdc", "classes", "diversity"], method=None, fake=fake, real=real,
                   dataset="digits", real_labels=real_labels)
    noise = torch.rand(900, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = evaluate(["fid", "prdc", "classes"], method=None, fake=noise, real=real, dataset="digits")
    # two random halves of the real digits vs uniform noise, in the classifier's feature space
    # (unit RMS): FID ~0.33 vs ~40 when written; a factor 20 leaves a wide margin
    assert 20 * out["fid"] < bad["fid"]
    assert abs(out["kid"]) < 0.01  # unbiased: ~0 for equal distributions (-0.0006; noise gives ~1.4)
    assert out["classes_covered"] == 10 and out["class_coverage"] == 1.0 and out["class_kl"] < 0.02
    assert abs(sum(out[f"class_share_{c}"] for c in range(10)) - 1) < 1e-12
    assert bad["class_kl"] > 0.5  # noise is read as a few classes only (measured ~1.1)
    assert 8.0 < out["is"] <= 10.0  # a confident classifier on balanced real digits (~9.2)
    assert min(out["precision"], out["recall"], out["coverage"]) > 0.9 and bad["coverage"] < 0.2
    assert 0.9 < out["diversity"] < 1.1


def test_stacked_digit_modes(classifier_cache):
    g = torch.Generator().manual_seed(0)
    fake, modes = stacked_digits(2000, g)
    real, _ = stacked_digits(500, g)
    out = evaluate(["stacked_modes", "fid"], method=None, fake=fake, real=real, dataset="stacked-digits")
    # per-channel accuracy ~0.99: the distinct predicted modes track the true ones closely
    # (~865 distinct of 1,000 expected from 2,000 uniform draws)
    assert abs(out["stacked_modes"] - len(modes.unique())) <= 30
    assert out["stacked_kl"] < 1.0
    collapsed = fake[:1].repeat(2000, 1, 1, 1)
    assert evaluate(["stacked_modes"], method=None, fake=collapsed, real=real,
                    dataset="stacked-digits")["stacked_modes"] == 1


def test_inception_features_without_weights(monkeypatch):
    monkeypatch.delenv("STABLEGEN_INCEPTION_WEIGHTS", raising=False)
    x, _ = load_digits()
    with pytest.raises(RuntimeError, match="STABLEGEN_INCEPTION_WEIGHTS"):
        evaluate(["fid"], method=None, fake=x[:50], real=x[50:100], dataset="digits", features="inception")
