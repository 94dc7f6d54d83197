"""A small Fashion-MNIST classifier: the feature network of FID/KID/PRDC on fashion-mnist.

The "Fréchet LeNet distance" practice of MNIST-scale papers (BENCHMARKS.md) on Fashion-MNIST
(Xiao et al. 2017): a three-layer CNN with BatchNorm trained once, deterministically (seed 0,
CPU, one thread), on the 55,000 images of the train split only (never val or test), with
held-out accuracy >= 91 % on the 10,000 test images, and cached in the user's cache directory
as safetensors keyed by `VERSION` (classifier_cache.py, shared with digits_net.py).

Measured: held-out accuracy 91.83 % (the same recipe with seeds 1 and 2: 91.81 %, 91.64 %);
training 61 s of CPU, 112 s wall on a shared 2-core Xeon (Sapphire Rapids) running other jobs
(load 3-4). The cache file records both: run `STABLEGEN_CACHE=$(mktemp -d) python -c "from
stablegen.metrics import fashion_net as f; f.fashion_classifier()"` and read its metadata
(test_accuracy, train_seconds).

Its 128-d penultimate activations (scaled to unit RMS on the training images) serve
FID/KID/PRDC; its predictions serve class coverage and the Inception-score analogue.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import to_float
from .classifier_cache import accuracy, cache_dir, cached_classifier, fit, seeded_init, set_feature_scale

VERSION = "v1"  # bump when the architecture or the training recipe changes: the cache key
NUM_FEATURES = 128  # width of the penultimate layer
NUM_CLASSES = 10
MIN_ACCURACY = 0.91  # held-out accuracy a trained classifier must reach
EPOCHS = 4  # passes over the 55,000 training images


class FashionNet(nn.Module):
    """CNN for (B, 1, 28, 28) images in [-1, 1]: `forward` -> (features (B, 128), logits (B, 10))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, stride=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64 * 7 * 7, NUM_FEATURES)
        self.head = nn.Linear(NUM_FEATURES, NUM_CLASSES)
        # set after training to 1 / RMS of the training images' features (set_feature_scale)
        self.register_buffer("feature_scale", torch.ones(()))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = F.relu(self.bn1(self.conv1(x)))  # (B, 16, 14, 14)
        h = F.relu(self.bn2(F.max_pool2d(self.conv2(h), 2)))  # (B, 32, 7, 7)
        h = F.relu(self.bn3(self.conv3(h)))  # (B, 64, 7, 7)
        features = F.relu(self.fc(h.flatten(1)))  # (B, 128)
        return features * self.feature_scale, self.head(features)  # (B, 128), (B, 10)


def cache_path() -> Path:
    return cache_dir() / f"fashion-classifier-{VERSION}.safetensors"


def train_fashion_classifier(epochs: int = EPOCHS, seed: int = 0) -> tuple[FashionNet, float]:
    """Train on the 55,000 train-split images, on CPU, seeded: Adam (lr 3e-3, cosine decay to 0),
    batch 128, no augmentation (flips cost accuracy at this budget). Returns (net in eval mode,
    accuracy on the 10,000 held-out test images). Needs the Fashion-MNIST files
    (stablegen.data.fashion)."""
    from ..data.fashion import load_fashion_mnist

    x, y = load_fashion_mnist("train")
    x = to_float(x)  # (55000, 1, 28, 28) in [-1, 1]
    net = seeded_init(FashionNet, seed)
    fit(net, x, y, epochs=epochs, batch_size=128, lr=3e-3, generator=torch.Generator().manual_seed(seed))
    set_feature_scale(net, x)
    x_test, y_test = load_fashion_mnist("test")
    return net, accuracy(net, to_float(x_test), y_test)


def fashion_classifier() -> FashionNet:
    """The cached Fashion-MNIST classifier, trained on first use (see the module doc for how long).

    A corrupt or mismatched cache file is replaced by a freshly trained one, with a warning.
    """
    return cached_classifier(cache_path(), FashionNet, lambda: train_fashion_classifier(), version=VERSION,
                             min_accuracy=MIN_ACCURACY, what="fashion classifier")

