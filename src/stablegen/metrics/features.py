"""Pluggable feature extractors for FID / KID / IS / PRDC / diversity.

- `digits`: the cached digits classifier (metrics/digits_net.py); each channel of an
  image is read as one digit (a stacked-digits image is three digits), resized to 8x8 with
  antialiasing when needed; features are the per-channel 128-d penultimate activations
  concatenated, (N, C * 128); logits (N, C, 10).
- `fashion`: the cached Fashion-MNIST classifier (metrics/fashion_net.py) on grey images,
  resized to 28x28 with antialiasing when needed: 128-d penultimate features and logits
  (N, 1, 10).
- `inception`: the standard FID network (Heusel et al. 2017; TensorFlow Inception-v3 of
  2015-12-05 as ported by torch-fidelity), 2048-d pool features and 1008-class logits for
  IS. Needs `torch-fidelity` and the weights in a local file; stablegen never downloads.
- `pixels`: the flattened sample, (N, prod(shape)): pixels for images, raw vectors for 2-D
  and vector data.

`extract(extractor, x)` runs an extractor in batches and returns float64 CPU tensors.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from .digits_net import digits_classifier
from .fashion_net import fashion_classifier

FeatureName = Literal["digits", "inception", "pixels", "fashion"]
FEATURES: tuple[str, ...] = get_args(FeatureName)

INCEPTION_ENV = "STABLEGEN_INCEPTION_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


class Features(NamedTuple):
    """Extracted features (N, F) and, for classifiers, per-channel class logits (N, C, K)."""

    features: Tensor
    logits: Tensor | None


class FeatureExtractor(abc.ABC):
    """Maps a batch of samples to features (and class logits when it is a classifier)."""

    name: str
    has_logits: bool

    @abc.abstractmethod
    def __call__(self, x: Tensor) -> Features:
        """One batch, on x's device, under no_grad."""


class PixelFeatures(FeatureExtractor):
    """Flattened samples: pixels for images, the vector itself for vector data."""

    name, has_logits = "pixels", False

    def __call__(self, x: Tensor) -> Features:
        return Features(x.reshape(len(x), -1).float(), None)


class DigitsFeatures(FeatureExtractor):
    """The digits classifier applied channel by channel to (N, C, H, W) images in [-1, 1]."""

    name, has_logits = "digits", True

    def __init__(self) -> None:
        self.net = digits_classifier()

    def __call__(self, x: Tensor) -> Features:
        if x.dim() != 4:
            raise ValueError(f"digits features need images (N, C, H, W); got shape {tuple(x.shape)}")
        n, c = x.shape[:2]
        x = _resized(x.float().clamp(-1, 1).reshape(n * c, 1, *x.shape[2:]), 8)  # (N*C, 1, 8, 8)
        net = self.net.to(x.device)
        features, logits = net(x)  # (N*C, 128), (N*C, 10)
        return Features(features.reshape(n, -1), logits.reshape(n, c, -1))


class FashionFeatures(FeatureExtractor):
    """The Fashion-MNIST classifier applied to (N, 1, H, W) grey images in [-1, 1]."""

    name, has_logits = "fashion", True

    def __init__(self) -> None:
        self.net = fashion_classifier()

    def __call__(self, x: Tensor) -> Features:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"fashion features need grey images (N, 1, H, W); got shape {tuple(x.shape)}")
        features, logits = self.net.to(x.device)(_resized(x.float().clamp(-1, 1), 28))  # (N, 128), (N, 10)
        return Features(features, logits[:, None, :])


def _resized(x: Tensor, size: int) -> Tensor:
    """(N, C, H, W) images resized to size x size (bilinear, antialiased) unless they are already."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class InceptionFeatures(FeatureExtractor):
    """Inception-v3 pool3 features (2048) and unbiased logits (1008) of torch-fidelity.

    Images in [-1, 1] become uint8 RGB (grey images are repeated over 3 channels); the
    network resizes them to 299x299 itself, as the reference TensorFlow code does.
    """

    name, has_logits = "inception", True

    def __init__(self, weights: str | Path | None = None) -> None:
        self.net = build_inception(weights)

    def __call__(self, x: Tensor) -> Features:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"inception features need (N, 1 or 3, H, W) images; got shape {tuple(x.shape)}")
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        features, logits = self.net.to(x.device)(x)  # (N, 2048), (N, 1008)
        return Features(features, logits[:, None, :])


def build_inception(weights: str | Path | None = None):
    """torch-fidelity's FeatureExtractorInceptionV3 with weights from a local file.

    `weights` (else $STABLEGEN_INCEPTION_WEIGHTS) names the file; stablegen never downloads.
    Raises RuntimeError naming everything missing (the package, the file) and how to get it.
    """
    weights = weights or os.environ.get(INCEPTION_ENV)
    problems = []
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as err:
        problems.append(f"the torch-fidelity package, which failed to import ({err}): `pip install torch-fidelity` "
                        "(it brings torchvision)")
    if not weights:
        problems.append(f"the weights file {INCEPTION_FILE}: set {INCEPTION_ENV}=/path/to/{INCEPTION_FILE} "
                        "or the eval section's inception_weights")
    elif not Path(weights).expanduser().is_file():
        problems.append(f"the weights file: {str(weights)!r} (from the eval section or {INCEPTION_ENV}) "
                        "does not exist")
    if problems:
        raise RuntimeError("inception features need " + "; and ".join(problems)
                           + f". stablegen never downloads: fetch {INCEPTION_URL} once on a machine with network "
                           "access and copy it here; or use features='digits', 'fashion' or 'pixels'")
    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                       feature_extractor_weights_path=str(Path(weights).expanduser()))


def get_extractor(name: FeatureName, *, inception_weights: str | Path | None = None) -> FeatureExtractor:
    """The feature extractor called `name` ('digits', 'fashion', 'inception' or 'pixels')."""
    if name == "pixels":
        return PixelFeatures()
    if name == "digits":
        return DigitsFeatures()
    if name == "fashion":
        return FashionFeatures()
    if name == "inception":
        return InceptionFeatures(inception_weights)
    raise ValueError(f"unknown features {name!r}; choose one of {', '.join(FEATURES)}")


def extract(extractor: FeatureExtractor, x: Tensor, *, batch_size: int = 500,
            device: torch.device | str | None = None) -> Features:
    """Run `extractor` over x in batches on `device` (default: x's); float64 CPU results."""
    if len(x) == 0:
        raise ValueError("cannot extract features from an empty set of samples")
    device = torch.device(device) if device is not None else x.device
    feats, logits = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = extractor(x[i : i + batch_size].to(device))
            feats.append(out.features.double().cpu())
            if out.logits is not None:
                logits.append(out.logits.double().cpu())
    return Features(torch.cat(feats), torch.cat(logits) if logits else None)
