"""A small digits classifier: the feature network of FID/KID/PRDC on the scikit-learn digits.

MNIST-scale papers measure the Fréchet distance (Heusel et al. 2017) in the feature space
of a small classifier trained on the data instead of Inception-v3 (the "Fréchet LeNet
distance" practice BENCHMARKS.md follows). This is that network for the 8x8 digits that
ship with scikit-learn: a three-layer CNN trained once, deterministically
(fixed seed, CPU, a few seconds), on the train part of the fixed benchmark split, with
held-out accuracy >= 97 % on its 360 test images, and cached in the user's cache directory
as safetensors keyed by `VERSION`.

Its 128-d penultimate activations (scaled to unit RMS on the training images) serve
FID/KID/PRDC; its predictions serve class coverage, the stacked-digits mode count and the
Inception-score analogue.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..data.digits import benchmark_split, load_digits

VERSION = "v1"  # bump when the architecture or the training recipe changes: the cache key
NUM_FEATURES = 128  # width of the penultimate layer
NUM_CLASSES = 10
MIN_ACCURACY = 0.97  # held-out accuracy a trained classifier must reach

_LOADED: dict[Path, "DigitsNet"] = {}  # per-process memo, keyed by cache file


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


def cache_dir() -> Path:
    """The user's cache directory: $STABLEGEN_CACHE, else ~/.cache/stablegen."""
    env = os.environ.get("STABLEGEN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "stablegen"


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


def accuracy(net: DigitsNet, x: Tensor, y: Tensor) -> float:
    """Share of (N, 1, 8, 8) images `x` whose predicted class equals `y`."""
    with torch.no_grad():
        return (net(x)[1].argmax(1) == y).double().mean().item()


def train_digits_classifier(epochs: int = 40, seed: int = 0) -> tuple[DigitsNet, float]:
    """Train on the benchmark split's train + validation images (1,437), on CPU, seeded.

    Adam (lr 2e-3, cosine decay), batch 64, random +-1 pixel shifts, a resize round trip
    on half of each batch and light Gaussian noise, so that features stay meaningful on
    imperfect generated digits and on digits generated at other sizes.
    Returns (net in eval mode, accuracy on the 360 held-out test images).
    """
    train_idx, val_idx, test_idx = benchmark_split()
    x, y = load_digits()
    fit = torch.from_numpy(np.sort(np.concatenate([train_idx, val_idx])))
    x_fit, y_fit = x[fit], y[fit]
    x_test, y_test = x[torch.from_numpy(test_idx)], y[torch.from_numpy(test_idx)]

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # parameter init from the seed, global RNG untouched
        torch.manual_seed(seed)
        net = DigitsNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps_per_epoch = -(-len(x_fit) // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x_fit), generator=g)
        for i in range(0, len(x_fit), 64):
            idx = perm[i : i + 64]
            xb = _shift(x_fit[idx], g)
            blur = torch.rand(len(xb), generator=g) < 0.5
            xb = torch.where(blur[:, None, None, None], _resize_round_trip(xb), xb)
            xb = (xb + 0.1 * torch.randn(xb.shape, generator=g)).clamp(-1, 1)
            loss = F.cross_entropy(net(xb)[1], y_fit[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        net.feature_scale.fill_(net(x_fit)[0].square().mean().rsqrt().item())
    return net, accuracy(net, x_test, y_test)


def _save(net: DigitsNet, test_accuracy: float, path: Path) -> None:
    """Write atomically (temporary file + rename) so concurrent runs never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_file(state, tmp, metadata={"version": VERSION, "test_accuracy": f"{test_accuracy:.6f}"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load(path: Path) -> DigitsNet:
    """Load a cached classifier; raises ValueError when the file is unreadable or mismatched."""
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    net = DigitsNet()
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not hold a DigitsNet {VERSION}: {err}") from err
    if not all(torch.isfinite(t).all() for t in state.values()):
        raise ValueError(f"{path} holds non-finite weights")
    return net.eval().requires_grad_(False)


def digits_classifier() -> DigitsNet:
    """The cached digits classifier, trained (a few seconds) on first use.

    A corrupt or mismatched cache file is replaced by a freshly trained one, with a warning.
    """
    path = cache_path()
    if path in _LOADED:
        return _LOADED[path]
    net = None
    if path.exists():
        try:
            net = _load(path)
        except ValueError as err:
            warnings.warn(f"digits classifier cache is corrupt ({err}); retraining", stacklevel=2)
    if net is None:
        net, test_accuracy = train_digits_classifier()
        if test_accuracy < MIN_ACCURACY:
            raise RuntimeError(f"digits classifier reached only {test_accuracy:.3f} held-out accuracy "
                               f"(< {MIN_ACCURACY}); this is a bug in stablegen, please report it")
        _save(net, test_accuracy, path)
    _LOADED[path] = net
    return net
