"""Class coverage and stacked-digits mode counts on hand-made labels."""

import math

import pytest
import torch

from stablegen.metrics.classes import class_coverage, kl_divergence, stacked_modes


def test_class_coverage_of_a_generator_that_makes_two_classes():
    real = torch.arange(10).repeat(10)  # uniform data classes
    fake = torch.tensor([3] * 30 + [7] * 10)
    out = class_coverage(fake, real, num_classes=10)
    assert out["classes_covered"] == 2 and out["class_coverage"] == 0.2
    assert out["class_share_3"] == 0.75 and out["class_share_7"] == 0.25 and out["class_share_0"] == 0
    # KL(p || uniform) = sum p log(10 p)
    assert out["class_kl"] == pytest.approx(0.75 * math.log(7.5) + 0.25 * math.log(2.5), rel=1e-12)


def test_matching_class_histogram_has_zero_kl():
    real = torch.tensor([0, 0, 1, 2])
    out = class_coverage(torch.tensor([2, 1, 0, 0, 0, 1, 2, 0]), real, num_classes=3)
    assert out["class_kl"] == pytest.approx(0.0, abs=1e-15) and out["class_coverage"] == 1.0


def test_kl_is_infinite_outside_the_data_support():
    assert kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])) == math.inf


def test_stacked_modes():
    labels = torch.tensor([[1, 2, 3], [1, 2, 3], [0, 0, 7], [9, 9, 9]])
    out = stacked_modes(labels)
    assert out["stacked_modes"] == 3
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    assert out["stacked_kl"] == pytest.approx(float((p * (p * 1000).log()).sum()), rel=1e-12)
    every = torch.stack(torch.meshgrid(*[torch.arange(10)] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert stacked_modes(every) == pytest.approx({"stacked_modes": 1000, "stacked_kl": 0.0}, abs=1e-12)
