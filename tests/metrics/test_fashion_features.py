"""The Fashion-MNIST classifier (held-out accuracy, cache file round trip), `auto` features on
fashion-mnist, the real-vs-real FID floor and class coverage of real images.

The classifier trains once per test session, into the session's cache folder (tests/conftest.py;
set STABLEGEN_CACHE to keep it between sessions): about 60 s of CPU on one thread, the bulk of
this module's time from an empty cache. Tests that read the
real images need Debian's dataset-fashion-mnist package and skip without it.
"""

import dataclasses

import pytest
import torch
from safetensors import safe_open

from stablegen.base import Method
from stablegen.data import fashion, load_dataset
from stablegen.evaluation import evaluate_method, floor_images, real_floor
from stablegen.metrics import applicable_metrics, evaluate, fid, resolve_features
from stablegen.metrics import classifier_cache
from stablegen.metrics import fashion_net as fn
from stablegen.metrics.features import extract, get_extractor
from stablegen.recipe import DataConfig, EvalConfig

INSTALLED = all((fashion.DEBIAN_DIR / f"{name}.gz").is_file() for pair in fashion.FILES.values() for name in pair)
needs_package = pytest.mark.skipif(not INSTALLED, reason="Debian's dataset-fashion-mnist is not installed "
                                                         "(apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def net():
    return fn.fashion_classifier()  # trained on first use in this session, then cached


@pytest.fixture(scope="module")
def test_split():
    return load_dataset(DataConfig(name="fashion-mnist", split="test", labels=True))


@pytest.fixture(scope="module")
def test_features(net, test_split):
    return extract(get_extractor("fashion"), test_split.as_float())


@needs_package
def test_held_out_accuracy_and_cache_round_trip(net, test_split, monkeypatch):
    assert fn.accuracy(net, test_split.as_float(), test_split.y) >= fn.MIN_ACCURACY  # 10,000 never-seen images
    path = fn.cache_path()
    assert path.is_file() and path.name == f"fashion-classifier-{fn.VERSION}.safetensors"
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["version"] == fn.VERSION and float(f.metadata()["test_accuracy"]) >= fn.MIN_ACCURACY
    classifier_cache.LOADED.pop(path)
    monkeypatch.setattr(fn, "train_fashion_classifier", lambda *a, **k: pytest.fail("retrained"))
    loaded = fn.fashion_classifier()  # from the file, without training
    assert loaded is not net and fn.fashion_classifier() is loaded  # memoized within the process
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    assert net.feature_scale != 1  # unit RMS features on the training images


def test_auto_picks_fashion_for_fashion_mnist():
    x = torch.zeros(4, 1, 28, 28)
    assert resolve_features("auto", "fashion-mnist", x) == "fashion"
    assert resolve_features("auto", "folder", x) == "pixels"
    assert {"is", "classes"} <= set(applicable_metrics(dataset="fashion-mnist", real=x, fake=x))
    with pytest.raises(ValueError, match="reads images"):
        resolve_features("fashion", "ring8", torch.zeros(4, 2))


@needs_package
def test_fashion_features_shapes_sizes_and_channels(net, test_split, test_features):
    assert test_features.features.shape == (10_000, fn.NUM_FEATURES) and test_features.logits.shape == (10_000, 1, 10)
    assert abs(test_features.features.square().mean().sqrt() - 1) < 0.1  # unit RMS, set on the train images
    big = torch.nn.functional.interpolate(test_split.as_float(slice(0, 500)), size=(32, 32), mode="bilinear")
    read = extract(get_extractor("fashion"), big).logits[:, 0].argmax(-1)  # resized back to 28x28
    assert (read == test_split.y[:500]).double().mean() >= 0.85
    with pytest.raises(ValueError, match="grey images"):
        get_extractor("fashion")(torch.zeros(2, 3, 28, 28))


@needs_package
def test_fid_of_test_against_test_is_near_zero(test_split, test_features):
    f, y = test_features.features, test_split.y
    halves = fid(f[:5000], f[5000:])  # two draws of one distribution: the finite-sample bias only
    assert fid(f, f) < 1e-9 and halves < 0.4  # 0.21 when written
    assert fid(f[:5000], f[5000:][y[5000:] != fashion.CLASSES.index("Shirt")]) > 5 * halves  # a class missing: 1.7


@needs_package
def test_floor_is_fid_of_training_images_against_the_reference(net, test_split):
    reference = dataclasses.replace(test_split, x=test_split.x[:2000], y=test_split.y[:2000])  # cheaper
    cfg = EvalConfig(metrics=["fid", "kid"], n=500)
    train = floor_images(reference, cfg.n)  # 500 of the 55,000 train images, seeded
    assert train.shape == (500, 1, 28, 28)
    floors = real_floor(reference, cfg)
    direct = evaluate(["fid"], method=None, fake=train, real=reference.x, dataset="fashion-mnist", features="fashion")
    assert floors["fid_floor"] == direct["fid"] and abs(floors["kid_floor"]) < 0.01
    assert real_floor(reference, cfg) is floors  # computed once per process

    class Replay(Method):  # a "generator" that reproduces those real training images
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def phases(self):
            return []

        def sample(self, n, *, generator=None, **kw):
            return train[:n]

    results = evaluate_method(Replay(), reference, cfg)
    assert list(results) == ["fid", "fid_floor", "kid", "kid_std", "kid_floor"]
    assert results["fid"] == pytest.approx(results["fid_floor"], abs=1e-9)
    assert results["fid_floor"] == floors["fid_floor"] and results["kid_floor"] == floors["kid_floor"]


def test_no_floor_without_separate_training_images():
    digits_all = load_dataset(DataConfig(name="digits"))  # split all: the reference is the training data
    assert floor_images(digits_all, 100) is None
    points = load_dataset(DataConfig(name="ring8", split="test", n=500))
    assert floor_images(points, 300).shape == (300, 2)  # synthetic data: a draw of the training distribution


@needs_package
def test_class_coverage_of_real_images(net, test_split):
    x, y = test_split.as_float(), test_split.y
    everything = evaluate(["classes"], method=None, fake=x, real=x, real_labels=y, dataset="fashion-mnist")
    assert everything["class_coverage"] == 1.0 and everything["class_kl"] < 0.01
    trouser = fashion.CLASSES.index("Trouser")
    trousers = evaluate(["classes"], method=None, fake=x[y == trouser], real=x, real_labels=y, dataset="fashion-mnist")
    assert trousers[f"class_share_{trouser}"] > 0.95 and trousers["class_kl"] > 2  # 0.982; uniform 10: ln 10 = 2.3
    collapsed = x[y == trouser][:1].expand(100, -1, -1, -1)  # a generator that draws one trouser
    one = evaluate(["classes"], method=None, fake=collapsed, real=x, real_labels=y, dataset="fashion-mnist")
    assert one["class_coverage"] == 0.1 and one[f"class_share_{trouser}"] == 1.0
