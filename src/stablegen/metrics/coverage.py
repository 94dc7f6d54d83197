"""Class coverage for the StabilityGuard: the share of the data's classes a generator keeps.

A sample's class is read without labels from the generator: on the 2-D mixtures it is the
nearest mode (however far: the check watches where the mass goes, not how sharp it is yet); on
digit images (digits, stacked-digits) it is the digits classifier's reading of each channel, so
a stacked-digits generator is judged on the 3 x 10 (channel, digit) classes. A class counts as
kept when it gets at least `min_share` of a fair share (1/K) of the samples.

Where a sample's quality can be read too (the 2-D mixtures: within 3 std of its nearest mode,
the benchmark's "high quality"), the guard also watches the high-quality share of the same
samples: a generator can keep every mode's nearest samples while they drift off the modes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..data.toys import MIXTURES, mixture_means
from .mixtures import mixture_metrics, nearest_mode

Reader = Callable[[Tensor], Tensor]  # samples (N, ...) -> class labels (N, C)


def kept_share(labels: Tensor, num_classes: int, min_share: float = 0.25) -> float:
    """Share of the (channel, class) pairs of labels (N, C) that get >= min_share / num_classes
    of the N samples."""
    if len(labels) == 0:
        return 0.0
    labels = labels.reshape(len(labels), -1).long().cpu()
    counts = torch.stack([torch.bincount(col, minlength=num_classes) for col in labels.T])  # (C, K)
    return float((counts.double() / len(labels) >= min_share / num_classes).double().mean())


def class_reader(dataset: str, sample_shape: tuple[int, ...]) -> tuple[Reader, int] | None:
    """(reader, number of classes) for data whose classes can be read off a sample, else None."""
    if dataset in MIXTURES and sample_shape == (2,):
        means = mixture_means(dataset)
        return (lambda x: nearest_mode(x, means)[1][:, None]), len(means)
    is_digit_images = dataset.startswith(("digits", "stacked-digits")) and len(sample_shape) == 3
    if is_digit_images and sample_shape[-2:] == (8, 8):
        from .features import DigitsFeatures

        net = DigitsFeatures()

        def read(x: Tensor) -> Tensor:
            return net(x).logits.argmax(-1).reshape(len(x), -1)  # (N, C): a digit per channel

        return read, 10
    return None


def quality_reader(dataset: str, sample_shape: tuple[int, ...]) -> Callable[[Tensor], float] | None:
    """The share of high-quality samples (metrics/mixtures.py) for data where a sample's
    quality can be read off it (the 2-D mixtures), else None."""
    if dataset in MIXTURES and sample_shape == (2,):
        return lambda x: mixture_metrics(x, dataset)["hq"]
    return None
