"""Precision / recall / density / coverage on hand-made point sets with known answers."""

import pytest
import torch

from stablegen.metrics.prdc import kth_neighbour_distance, prdc


def _line_sets():
    # real: 10 points (i, 0); with k = 2 the radii are 2 at both ends and 1 inside.
    real = torch.stack([torch.arange(10.0), torch.zeros(10)], 1)
    # fake: three points near the line, three far away at x = 50.
    fake = torch.tensor([[3.2, 0.0], [3.3, 0.0], [6.2, 0.0], [50.0, 0.0], [50.0, 0.5], [50.0, 1.0]])
    return real, fake


def test_kth_neighbour_radii():
    real, fake = _line_sets()
    assert kth_neighbour_distance(real, 2).tolist() == pytest.approx([2] + [1] * 8 + [2])
    assert kth_neighbour_distance(fake, 2)[:3].tolist() == pytest.approx([3.0, 2.9, 3.0])


def test_prdc_hand_made_answers():
    real, fake = _line_sets()
    out = prdc(real, fake, k=2, chunk=4)  # a small chunk exercises the chunked loops
    # precision: the 3 near points lie in real balls, the 3 at x = 50 do not -> 3/6
    # recall: fake balls (radius ~3 around 3.2, 3.3, 6.2) reach x_1..x_9 but not x_0 -> 9/10
    # density: each near fake point lies in exactly 2 real balls -> 6 / (k * M) = 6 / 12
    # coverage: x_3, x_4, x_6, x_7 have a fake point within their radius -> 4/10
    assert out == pytest.approx({"precision": 0.5, "recall": 0.9, "density": 0.5, "coverage": 0.4})
    # every comparison above is at least 0.1 away from a tie, so chunking cannot change it
    assert prdc(real, fake, k=2, chunk=1000) == out


def test_prdc_of_a_set_against_itself():
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    out = prdc(x, x)  # k = 5
    # every point lies in its own ball and in those of its 5 nearest neighbours (no ties for
    # continuous data): density = (k + 1) / k; the other three are 1
    assert out == pytest.approx({"precision": 1.0, "recall": 1.0, "density": 6 / 5, "coverage": 1.0})
    # the k-th neighbour lies exactly on each ball's boundary: far from the origin and at a
    # large scale, round-off must still not decide it
    assert prdc(50 * x + 1e4, 50 * x + 1e4) == out


def test_prdc_collapsed_generator_has_precision_but_no_coverage():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    fake = x[:1].repeat(50, 1)  # 50 copies of one real point
    out = prdc(x, fake, k=5)
    assert out["precision"] == 1.0 and out["density"] > 1  # x[0] lies in its own ball and others'
    # coverage: the real balls that hold x[0], counted by brute force
    radii = torch.cdist(x, x).sort(1).values[:, 5]
    expected = float(((x - x[0]).norm(dim=1) <= radii).double().mean())
    assert out["coverage"] == pytest.approx(expected) and expected < 0.05
    # recall: the fake balls have radius 0 (50 copies), so only x[0] itself is inside
    assert out["recall"] == 1 / 300


def test_prdc_rejects_too_few_points():
    with pytest.raises(ValueError, match="more than k=5"):
        prdc(torch.randn(5, 2), torch.randn(20, 2))
