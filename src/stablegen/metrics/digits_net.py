"""A small digits classifier: the feature network of FID/KID/PRDC on the scikit-learn digits.

MNIST-scale papers measure the Fréchet distance (Heusel et al. 2017) in the feature space
of a small classifier trained on the data instead of Inception-v3 (the "Fréchet LeNet
distance" practice BENCHMARKS.md follows). This is that network for the 8x8 digits that
ship with scikit-learn: a three-layer CNN trained once, deterministically
(fixed seed, CPU, a few seconds), on the train part of the fixed benchmark split, with
held-out accuracy >= 97 % on its 360 test images, and cached in the user's cache directory
as safetensors keyed by `VERSION` (classifier_cache.py, shared with fashion_net.py).

Its 128-d penultimate activations (scaled to unit RMS on the training images) serve
FID/KID/PRDC; its predictions serve class coverage, the stacked-digits mode count and the
Inception-score analogue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.digits import benchmark_split, load_digits
from .classifier_cache import LOADED as _LOADED  # noqa: F401  (the per-process memo, shared by the classifiers)
from .classifier_cache import accuracy, cache_dir, cached_classifier, fit, seeded_init, set_feature_scale

VERSION = "v1"  # bump when the architecture or the training recipe changes: the cache key
NUM_FEATURES = 128  # width of the penultimate layer
NUM_CLASSES = 10
MIN_ACCURACY = 0.97  # held-out accuracy a trained classifier must reach


class DigitsNet(nn.Module):
    """CNN for (B, 1, 8, 8) digits in [-1, 1]: `forward` -> (features (B, 128), logits (B, 10))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 2 * 2, NUM_FEATURES)
        self.head = nn.Linear(NUM_FEATURES, NUM_CLASSES)
        # set after training to 1 / RMS of the training images' features, so that features
        # (and FID / KID values) are on a unit scale like the Inception features
        self.register_buffer("feature_scale", torch.ones(()))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = F.relu(self.conv1(x))  # (B, 16, 8, 8)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, 32, 4, 4)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)  # (B, 64, 2, 2)
        features = F.relu(self.fc(h.flatten(1)))  # (B, 128)
        return features * self.feature_scale, self.head(features)  # (B, 128), (B, 10)


def cache_path() -> Path:
    return cache_dir() / f"digits-classifier-{VERSION}.safetensors"


def _shift(x: Tensor, generator: torch.Generator) -> Tensor:
    """Translate each image by -1, 0 or +1 pixel along each axis, filling with background (-1)."""
    b = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)  # (B, 1, 10, 10)
    dy, dx = torch.randint(3, (2, b), generator=generator)
    rows = (dy[:, None] + torch.arange(8))[:, None, :, None].expand(b, 1, 8, 10)
    out = padded.gather(2, rows)  # (B, 1, 8, 10)
    cols = (dx[:, None] + torch.arange(8))[:, None, None, :].expand(b, 1, 8, 8)
    return out.gather(3, cols)  # (B, 1, 8, 8)


def _resize_round_trip(x: Tensor) -> Tensor:
    """Upsample to 16x16 and back with the extractor's antialiased resize: the blur a digit
    generated at another size picks up on its way to the classifier."""
    up = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    return F.interpolate(up, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """A random +-1 pixel shift, the resize round trip on half of the batch, light noise."""
    x = _shift(x, generator)
    blur = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(blur[:, None, None, None], _resize_round_trip(x), x)
    return (x + 0.1 * torch.randn(x.shape, generator=generator)).clamp(-1, 1)


def train_digits_classifier(epochs: int = 40, seed: int = 0) -> tuple[DigitsNet, float]:
    """Train on the benchmark split's train + validation images (1,437), on CPU, seeded.

    Adam (lr 2e-3, cosine decay), batch 64, random +-1 pixel shifts, a resize round trip
    on half of each batch and light Gaussian noise, so that features stay meaningful on
    imperfect generated digits and on digits generated at other sizes.
    Returns (net in eval mode, accuracy on the 360 held-out test images).
    """
    train_idx, val_idx, test_idx = benchmark_split()
    x, y = load_digits()
    fit_idx = torch.from_numpy(np.sort(np.concatenate([train_idx, val_idx])))
    net = seeded_init(DigitsNet, seed)
    fit(net, x[fit_idx], y[fit_idx], epochs=epochs, batch_size=64, lr=2e-3, augment=_augment,
        generator=torch.Generator().manual_seed(seed))
    set_feature_scale(net, x[fit_idx])
    test = torch.from_numpy(test_idx)
    return net, accuracy(net, x[test], y[test])


def digits_classifier() -> DigitsNet:
    """The cached digits classifier, trained (a few seconds) on first use.

    A corrupt or mismatched cache file is replaced by a freshly trained one, with a warning.
    """
    return cached_classifier(cache_path(), DigitsNet, lambda: train_digits_classifier(), version=VERSION,
                             min_accuracy=MIN_ACCURACY, what="digits classifier")
