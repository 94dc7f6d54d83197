"""The denoising nets and embeddings: shapes on odd sizes, conditioning, identity at init."""

from __future__ import annotations

import math

import pytest
import torch

from stablegen.nets.denoiser import MLPDenoiser
from stablegen.nets.embeddings import ClassEmbedding, TimeEmbedding, sinusoidal_embedding
from stablegen.nets.unet import UNet


def test_sinusoidal_embedding_values():
    t = torch.tensor([0.0, 1.0, 2.5])
    emb = sinusoidal_embedding(t, 8)
    assert emb.shape == (3, 8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))  # cos 0 = 1, sin 0 = 0
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(4) / 4)
    assert torch.allclose(emb[2], torch.cat([(2.5 * freqs).cos(), (2.5 * freqs).sin()]))
    assert sinusoidal_embedding(t, 7).shape == (3, 7)
    assert TimeEmbedding(16, base=8)(t).shape == (3, 16)
    assert ClassEmbedding(10, 4)(torch.tensor([0, 10])).shape == (2, 4)  # 10 = "no label"


@pytest.mark.parametrize("size, mult", [(8, (1, 2, 2)), (7, (1, 2)), (16, (1, 2, 2))])
def test_unet_shapes_and_zero_output_at_init(size, mult):
    net = UNet(3, 6, size, channels=8, channel_mult=mult, num_res_blocks=1, attention_resolutions=(4, 8),
               heads=2, num_classes=5)
    x = torch.randn(2, 3, size, size)
    out = net(x, torch.tensor([3.0, 500.5]), torch.tensor([1, 5]))
    assert out.shape == (2, 6, size, size)
    assert torch.all(out == 0)  # zero-initialised output convolution
    with pytest.raises(ValueError, match="class-conditional"):
        net(x, torch.tensor([3.0, 5.0]))


def test_unet_conditioning_reaches_the_output():
    torch.manual_seed(0)
    net = UNet(1, 1, 8, channels=8, num_res_blocks=1, heads=2, num_classes=3)
    for p in net.parameters():  # leave the zero init so that outputs depend on the inputs
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 1, 8, 8)
    a = net(x, torch.tensor([10.0]), torch.tensor([0]))
    assert not torch.allclose(a, net(x, torch.tensor([900.0]), torch.tensor([0])))
    assert not torch.allclose(a, net(x, torch.tensor([10.0]), torch.tensor([2])))


def test_attention_heads_must_divide_channels():
    with pytest.raises(ValueError, match="divisible"):
        UNet(1, 1, 8, channels=10, channel_mult=(1,), heads=4)


def test_mlp_denoiser():
    net = MLPDenoiser(2, 4, width=16, depth=2, num_classes=3)
    out = net(torch.randn(5, 2), torch.rand(5) * 999, torch.tensor([0, 1, 2, 3, 0]))
    assert out.shape == (5, 4)
    with pytest.raises(ValueError, match="class-conditional"):
        net(torch.randn(5, 2), torch.rand(5))
