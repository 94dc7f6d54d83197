"""The digits classifier (held-out accuracy, cache, corrupt cache, determinism) and the
feature extractors, including the Inception error paths (tests never download)."""

import math
import warnings

import pytest
import torch
from safetensors import safe_open

from stablegen.data.digits import benchmark_split, load_digits, stacked_digits
from stablegen.metrics import digits_net as dc
from stablegen.metrics.features import (INCEPTION_ENV, INCEPTION_URL, extract, get_extractor)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # one cache per test session (shared with test_evaluate.py): the classifier trains once
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.getbasetemp() / "stablegen-cache"
        mp.setenv("STABLEGEN_CACHE", str(path))
        dc._LOADED.clear()
        yield path
        dc._LOADED.clear()


@pytest.fixture(scope="module")
def net(cache):
    return dc.digits_classifier()


def _held_out():
    x, y = load_digits()
    test = torch.from_numpy(benchmark_split()[2])
    return x[test], y[test]


def test_held_out_accuracy_and_cache_file(net, cache):
    x, y = _held_out()  # the 360 test images of the benchmark split, never trained on
    assert dc.accuracy(net, x, y) >= 0.97
    path = cache / f"digits-classifier-{dc.VERSION}.safetensors"
    assert dc.cache_path() == path and path.is_file()
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["version"] == dc.VERSION
        assert float(f.metadata()["test_accuracy"]) >= 0.97


def test_second_use_loads_the_cache_without_training(net, monkeypatch):
    dc._LOADED.clear()
    monkeypatch.setattr(dc, "train_digits_classifier", lambda *a, **k: pytest.fail("retrained"))
    loaded = dc.digits_classifier()
    assert loaded is not net
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    assert dc.digits_classifier() is loaded  # memoized within the process


def test_corrupt_cache_retrains_with_a_warning(net, monkeypatch):
    dc.cache_path().write_bytes(b"not a safetensors file")
    dc._LOADED.clear()
    calls = []

    def fake_training(*args, **kwargs):  # stands in for the few-second training
        calls.append(1)
        return net, 0.99

    monkeypatch.setattr(dc, "train_digits_classifier", fake_training)
    with pytest.warns(UserWarning, match="corrupt"):
        assert dc.digits_classifier() is net
    assert calls == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dc._LOADED.clear()
        reloaded = dc.digits_classifier()  # the rewritten cache loads cleanly, without training
    assert calls == [1]
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), net.state_dict().values()))


def test_training_is_deterministic():
    a, acc_a = dc.train_digits_classifier(epochs=1)
    b, acc_b = dc.train_digits_classifier(epochs=1)
    assert acc_a == acc_b
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_digits_features_on_other_sizes_and_channels(net):
    x, y = _held_out()
    ext = get_extractor("digits")
    out = extract(ext, x, batch_size=100)
    assert out.features.shape == (360, dc.NUM_FEATURES) and out.logits.shape == (360, 1, 10)
    assert out.features.dtype == torch.float64
    big, _ = load_digits(16)  # bilinear upsampling, then antialiased back to 8x8 by the extractor
    big = big[torch.from_numpy(benchmark_split()[2])]
    acc16 = (extract(ext, big).logits[:, 0].argmax(-1) == y).double().mean()
    assert acc16 >= 0.97  # trained with this resize round trip as augmentation; 0.983 when written
    rgb = x.repeat(1, 3, 1, 1)
    out3 = extract(ext, rgb)
    assert out3.features.shape == (360, 3 * dc.NUM_FEATURES) and out3.logits.shape == (360, 3, 10)
    assert torch.allclose(out3.features[:, : dc.NUM_FEATURES], out.features)


def test_stacked_digits_modes_are_read_per_channel(net):
    x, modes = stacked_digits(300, torch.Generator().manual_seed(0))
    digits = extract(get_extractor("digits"), x).logits.argmax(-1)  # (300, 3)
    pred = 100 * digits[:, 0] + 10 * digits[:, 1] + digits[:, 2]
    # per-digit accuracy ~0.99 (most stacked digits were seen in training): a mode is right
    # with probability ~0.97, so >= 0.9 of 300 leaves a wide margin
    assert (pred == modes).double().mean() >= 0.9


def test_pixel_features_flatten():
    x = torch.randn(5, 2, 3, 4)
    assert torch.equal(extract(get_extractor("pixels"), x).features, x.reshape(5, -1).double())
    assert extract(get_extractor("pixels"), torch.randn(7, 2)).logits is None


def test_digits_features_reject_vectors(net):
    with pytest.raises(ValueError, match="need images"):
        extract(get_extractor("digits"), torch.randn(4, 2))


def test_inception_without_weights_says_how_to_get_them(monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    with pytest.raises(RuntimeError) as err:
        get_extractor("inception")
    msg = str(err.value)
    assert INCEPTION_ENV in msg and INCEPTION_URL in msg and "never downloads" in msg


def test_inception_weights_file_missing(monkeypatch, tmp_path):
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(RuntimeError, match="nowhere.pth.*does not exist"):
        get_extractor("inception")


def test_inception_without_torch_fidelity_names_the_package(tmp_path):
    try:
        import torch_fidelity  # noqa: F401
        pytest.skip("torch-fidelity is installed here")
    except ImportError:
        pass
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    with pytest.raises(RuntimeError, match="pip install torch-fidelity") as err:
        get_extractor("inception", inception_weights=weights)
    assert "weights file" not in str(err.value)  # the file is there: only the package is missing


def test_unknown_feature_name():
    with pytest.raises(ValueError, match="digits, inception, pixels"):
        get_extractor("lenet")


def test_digits_logits_are_probabilities_of_ten_classes(net):
    x, _ = _held_out()
    p = extract(get_extractor("digits"), x[:10]).logits.softmax(-1)
    assert p.sum(-1).sub(1).abs().max() < 1e-9 and not math.isnan(float(p.sum()))
