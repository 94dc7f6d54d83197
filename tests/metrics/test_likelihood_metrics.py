"""Bits/dim: a model that knows nothing scores log2(17) on the digits' 17 grey levels."""

import math

import pytest
import torch

from stablegen.data.digits import LEVELS, load_digits, to_levels
from stablegen.metrics.likelihood import bits_per_dim, dequantize, image_bits_per_dim


def _uniform_density(x):
    # the uniform density on [-1, 1]^D: log p = -D log 2, for points inside the cube only
    assert bool(((x >= -1) & (x < 1)).all())
    return torch.full((len(x),), -math.prod(x.shape[1:]) * math.log(2.0), dtype=torch.float64)


def test_uniform_density_gives_log2_17_exactly():
    x = load_digits()[0][:50]
    bpd = image_bits_per_dim(_uniform_density, x, draws=5, generator=torch.Generator().manual_seed(0),
                             batch_size=16)
    assert bpd.shape == (50,)
    assert torch.allclose(bpd, torch.full_like(bpd, math.log2(LEVELS)), rtol=0, atol=1e-12)


def test_uniform_over_levels_for_a_discrete_model():
    x = load_digits()[0][:20]
    log_p = lambda xb: torch.full((len(xb),), -64 * math.log(LEVELS), dtype=torch.float64)  # noqa: E731
    bpd = image_bits_per_dim(log_p, x, continuous=False)
    assert torch.allclose(bpd, torch.full_like(bpd, math.log2(LEVELS)), rtol=0, atol=1e-12)


def test_draws_are_averaged_and_dequantization_keeps_levels():
    x = load_digits()[0][:10]
    seen = []

    def log_p(xb):
        seen.append(xb)
        return torch.zeros(len(xb))

    image_bits_per_dim(log_p, x, draws=3, generator=torch.Generator().manual_seed(1))
    assert len(seen) == 3 and not torch.equal(seen[0], seen[1])
    for xd in seen:  # each dequantized pixel lies in its level's bin [l/17, (l+1)/17) mapped to [-1, 1)
        lv = to_levels(x).double()
        u = (xd.double() + 1) / 2 * LEVELS - lv
        assert bool(((u >= 0) & (u < 1)).all())


def test_bits_per_dim_signature_unchanged():
    lp = torch.tensor([-64 * math.log(2.0)], dtype=torch.float64)
    assert bits_per_dim(lp, 64).item() == pytest.approx(math.log2(17), abs=1e-12)
    assert dequantize(torch.zeros(2, 1, 8, 8), torch.Generator().manual_seed(0)).shape == (2, 1, 8, 8)
