"""The guard's class coverage (metrics/coverage.py): kept classes on hand-made labels, the
class readers of the 2-D mixtures and of digit images, and the mixtures' quality reader."""

import pytest
import torch

from stablegen.data import load_dataset
from stablegen.data.toys import mixture_means
from stablegen.metrics.coverage import class_reader, kept_share, quality_reader
from stablegen.recipe import DataConfig


def test_a_class_is_kept_from_a_quarter_of_a_fair_share():
    # 4 classes, 40 samples: a fair share is 10, a quarter of it 2.5
    labels = torch.tensor([0] * 20 + [1] * 15 + [2] * 3 + [3] * 2)
    assert kept_share(labels, 4) == 0.75  # class 3's two samples are under 2.5
    assert kept_share(torch.stack([labels, torch.zeros(40, dtype=torch.long)], 1), 4) == pytest.approx(0.5)
    assert kept_share(torch.zeros(0, dtype=torch.long), 4) == 0.0  # no samples keep no class


def test_mixture_reader_counts_each_sample_at_its_nearest_mode():
    read, k = class_reader("grid25", (2,))
    means = mixture_means("grid25")
    x = means.repeat(40, 1) + 0.6 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    assert k == 25 and kept_share(read(x), k) == 1.0  # blurred far beyond 3 std: still every mode
    assert kept_share(read(x[(x[:, 0] > -3)]), k) == 0.8  # the left column of modes gone
    assert class_reader("moons", (2,)) is None and class_reader("grid25", (3,)) is None


def test_digit_images_are_read_by_the_classifier_channel_by_channel():
    digits = load_dataset(DataConfig(name="digits", labels=True))
    read, k = class_reader("digits", tuple(digits.x.shape[1:]))
    assert k == 10 and kept_share(read(digits.x[:400]), k) == 1.0
    threes = digits.x[digits.y == 3][:100]
    assert kept_share(read(threes), k) == pytest.approx(0.1)  # the classifier reads 3s (>= 97 % accurate)
    stacked = torch.cat([digits.x[:300], threes.repeat(3, 1, 1, 1), digits.x[300:600]], 1)  # (300, 3, 8, 8)
    assert read(stacked).shape == (300, 3)
    assert kept_share(read(stacked), k) == pytest.approx(0.7)  # channel 1 keeps one digit of ten


def test_quality_reader_is_the_share_within_three_std_of_a_mode():
    """grid25 (std 0.05): samples 0.1 from a mode are high quality, 0.2 from one are not,
    however every mode keeps its nearest samples."""
    hq = quality_reader("grid25", (2,))
    means = mixture_means("grid25")
    near, far = means + torch.tensor([0.1, 0.0]), means + torch.tensor([0.0, 0.2])
    assert hq(torch.cat([near, near, near, far])) == pytest.approx(0.75)
    read, k = class_reader("grid25", (2,))
    assert kept_share(read(far.repeat(40, 1)), k) == 1.0  # coverage alone does not see the drift
    assert quality_reader("moons", (2,)) is None and quality_reader("digits", (1, 8, 8)) is None
