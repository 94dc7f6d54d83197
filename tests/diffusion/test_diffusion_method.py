"""The diffusion Method: losses, conditioning and guidance, sampling keywords, the VLB, recipes."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from stablegen.base import Batch, DataInfo, has_capability
from stablegen.data.digits import load_digits
from stablegen.metrics.likelihood import dequantize
from stablegen.methods.diffusion import (Diffusion, DiffusionConfig, build,
                                         discretized_gaussian_log_likelihood)
from stablegen.methods.diffusion_schedules import alphas_cumprod, beta_schedule, eps_from_x0, expand

DIGITS = DataInfo("digits", "image", (1, 8, 8), num_classes=10, levels=17)
RING = DataInfo("ring8", "vector", (2,))
TINY_UNET = {"channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_resolutions": (4,), "heads": 2}


def tiny_digits(**kw) -> Diffusion:
    return build(DiffusionConfig(timesteps=20, steps=5, unet=TINY_UNET, **kw), DIGITS)


class ConstantNet(nn.Module):
    """Outputs a learnable constant (B, out) for vectors; records the labels it was given."""

    def __init__(self, out: int, label_value: bool = False):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(out))
        self.label_value, self.seen = label_value, []

    def forward(self, x, t, y=None):
        self.seen.append(None if y is None else y.clone())
        out = self.value.expand(x.shape[0], -1)
        if self.label_value:  # output = the label as a number (null label -> num_classes)
            out = out + y.float()[:, None]
        return out


# ---- config ----------------------------------------------------------------------------
def test_config_validates_early():
    with pytest.raises(ValidationError, match="'v' or 'x0'"):
        DiffusionConfig(zero_terminal_snr=True)  # eps prediction cannot work with abar_{T-1} = 0
    with pytest.raises(ValidationError, match="learned_variance"):
        DiffusionConfig(variance="learned")
    with pytest.raises(ValidationError):
        DiffusionConfig(sampler="plms")
    with pytest.raises(ValidationError):
        DiffusionConfig(schedule="sigmoid")
    with pytest.raises(ValueError, match="vector data"):
        build(DiffusionConfig(net="mlp"), DIGITS)
    with pytest.raises(ValueError, match="image or vector"):
        build(DiffusionConfig(), DataInfo("sines", "sequence", (32, 1)))


# ---- training loss -------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"prediction": "v", "loss_weighting": "min_snr"},
                                {"prediction": "x0", "schedule": "cosine", "learned_variance": True},
                                {"prediction": "v", "zero_terminal_snr": True}])
def test_loss_is_per_sample_and_trains_the_net(kw):
    torch.manual_seed(0)
    method = tiny_digits(**kw)
    x, y = load_digits()
    (phase,) = method.phases()
    assert phase.name == "main" and len(phase.params) == len(list(method.net.parameters()))
    loss, logs = phase.loss(Batch(x[:8], y[:8]), 0)
    assert loss.shape == (8,) and torch.isfinite(loss).all()
    assert all(v.dim() == 0 and not v.requires_grad for v in logs.values())
    loss.mean().backward()
    out_layer = method.net.out[-1].weight  # zero-initialised output conv: it gets the gradient first
    assert out_layer.grad is not None and out_layer.grad.abs().sum() > 0


def test_hybrid_vlb_term_stops_the_gradient_at_the_mean():
    # Improved DDPM, sec. 3.1: L_vlb trains only the variance; the mean's gradient comes from
    # L_simple alone, so it is the same with lambda = 1 as with lambda = 0.
    grads = {}
    for weight in (0.0, 1.0):
        method = Diffusion(DiffusionConfig(learned_variance=True, vlb_weight=weight), RING, ConstantNet(4))
        torch.manual_seed(1)
        loss, logs = method.loss(Batch(torch.randn(64, 2)), 0)
        loss.mean().backward()
        grads[weight] = method.net.value.grad.clone()
    assert torch.allclose(grads[0.0][:2], grads[1.0][:2])  # mean part: unchanged
    assert torch.all(grads[0.0][2:] == 0) and torch.all(grads[1.0][2:] != 0)  # variance: from L_vlb only


def test_label_dropout_for_classifier_free_guidance():
    info = DataInfo("toy", "vector", (2,), num_classes=3)
    y = torch.tensor([0, 1, 2, 1])
    for p, expected in ((0.0, y), (1.0, torch.full_like(y, 3))):
        net = ConstantNet(2)
        Diffusion(DiffusionConfig(label_dropout=p), info, net).loss(Batch(torch.zeros(4, 2), y), 0)
        assert torch.equal(net.seen[-1], expected)
    with pytest.raises(ValueError, match="labels"):
        Diffusion(DiffusionConfig(), info, ConstantNet(2)).loss(Batch(torch.zeros(4, 2)), 0)


# ---- sampling ------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "heun", "euler"])
def test_sample_keywords(sampler):
    method = tiny_digits()
    g = torch.Generator().manual_seed(0)
    x = method.sample(3, generator=g, sampler=sampler, steps=4, guidance=2.0, labels=[1, 2, 3])
    assert x.shape == (3, 1, 8, 8) and x.abs().max() <= 1.0  # x0 clipped for images
    again = method.sample(3, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=4,
                          guidance=2.0, labels=[1, 2, 3])
    assert torch.equal(x, again)
    assert method.training  # sampling restores the mode


def test_sample_errors_are_concise():
    method = tiny_digits()
    with pytest.raises(ValueError, match="ddpm, ddim, heun or euler"):
        method.sample(2, sampler="plms")
    with pytest.raises(ValueError, match="0..9"):
        method.sample(2, labels=[3, 10])
    with pytest.raises(ValueError, match="1..20"):
        method.sample(2, sampler="ddim", steps=50)
    with pytest.raises(ValueError, match="without labels"):
        build(DiffusionConfig(), RING).sample(2, labels=1)


def test_guidance_combines_conditional_and_unconditional_outputs():
    # x0-prediction, one DDIM step to clean data: the sample is the guided net output,
    # which for a net that outputs its label is null + w (label - null) (Ho & Salimans 2022).
    info = DataInfo("toy", "vector", (2,), num_classes=5)
    net = ConstantNet(2, label_value=True)
    method = Diffusion(DiffusionConfig(prediction="x0", clip_x0="none"), info, net)
    for w, calls in ((0.0, 1), (1.0, 1), (3.0, 1)):
        net.seen.clear()
        x = method.sample(4, sampler="ddim", steps=1, guidance=w, labels=2)
        assert torch.allclose(x, torch.full_like(x, 5 + w * (2 - 5)))
        assert len(net.seen) == calls
    net.seen.clear()
    method.sample(4, sampler="ddim", steps=1, guidance=3.0, labels=2)
    assert torch.equal(net.seen[0], torch.tensor([2] * 4 + [5] * 4))  # one batched call: cond, then null
    y = method._labels_for_sampling(1000, None, torch.Generator().manual_seed(0))
    assert set(y.tolist()) == set(range(5))  # labels=None draws classes uniformly


# ---- likelihood ----------------------------------------------------------------------------
def test_discretized_gaussian_is_a_distribution_over_the_levels():
    levels = torch.arange(17, dtype=torch.float32) / 16 * 2 - 1
    for mean, log_scale in ((0.0, -2.0), (0.93, -4.0), (-1.3, -1.0), (0.3, -7.0)):
        lp = discretized_gaussian_log_likelihood(levels, torch.full((17,), mean), torch.full((17,), log_scale), 17)
        assert lp.double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_log_prob_convention_on_digits():
    torch.manual_seed(0)
    method = tiny_digits()
    assert has_capability(method, "log_prob")
    x, _ = load_digits()
    x = x[:6]
    deq = dequantize(x, torch.Generator().manual_seed(0))
    a = method.log_prob(x, generator=torch.Generator().manual_seed(1))
    b = method.log_prob(deq, generator=torch.Generator().manual_seed(1))
    assert a.shape == (6,) and torch.isfinite(a).all()
    # a density constant on each dequantization bin: grid and dequantized images score alike
    assert torch.allclose(a, b)
    # every VLB term is >= 0, so log P(levels) <= 0, i.e. log_prob <= D log(L / 2)
    assert (a <= 64 * math.log(17 / 2) + 1e-3).all()


class GaussianOracle(nn.Module):
    """The exact eps-predictor of 1-D N(MU, S^2) data under the linear T = 1000 schedule."""

    MU, S = 0.5, 0.3

    def __init__(self):
        super().__init__()
        self.abar = alphas_cumprod(beta_schedule("linear", 1000))
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x, t, y=None):
        a = self.abar[t.round().long()]
        r = expand(a, x)
        x0 = self.MU + r.sqrt() * self.S**2 * (x - r.sqrt() * self.MU) / (r * self.S**2 + 1 - r)
        return eps_from_x0(x, x0, a)


def test_vlb_bounds_the_true_log_density_with_the_exact_denoiser():
    # With the exact posterior mean and fixed-large variance the bound sits 0.13 nats under
    # log N(x; MU, S^2) on average (the cost of the fixed variances; measured over 20,000
    # points, 0.19 on these 2,000); per-point spread is 1.5 nats, so over 2,000 points the
    # mean gap has a standard error of 0.033. A wrong KL, decoder or prior term moves the gap
    # by far more than 0.1, and a gap below 0 would break the bound.
    method = Diffusion(DiffusionConfig(variance="fixed_large"), DataInfo("g", "vector", (1,)), GaussianOracle())
    mu, s = GaussianOracle.MU, GaussianOracle.S
    x = mu + s * torch.randn(2000, 1, generator=torch.Generator().manual_seed(0))
    true = (-0.5 * ((x - mu) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi))[:, 0]
    lp = method.log_prob(x, generator=torch.Generator().manual_seed(1))
    gap = (true - lp).mean().item()
    assert 0.05 < gap < 0.35
    # the stratified estimate with 50 timesteps is unbiased: per-point spread 3.8 nats,
    # standard error 0.085 over 2,000 points, tolerance 0.4
    est = method.log_prob(x, timesteps=50, generator=torch.Generator().manual_seed(2))
    assert est.mean().item() == pytest.approx(lp.mean().item(), abs=0.4)


# ---- a short training run on a known target --------------------------------------------------
def test_training_moves_samples_onto_a_gaussian_target():
    # 200 Adam steps on N((0.5, -0.5), 0.2^2 I) put DDPM samples' mean within 0.04 and their
    # std within 0.005 of the target's (measured); the tolerances are 0.1 and 0.05, while
    # the untrained net (eps = 0) gives a mean 0.6 off and a std of 2.9.
    torch.manual_seed(0)
    method = build(DiffusionConfig(timesteps=100, mlp={"width": 64, "depth": 2}), RING)
    (phase,) = method.phases()
    opt = torch.optim.Adam(phase.params, lr=2e-3)
    g = torch.Generator().manual_seed(0)
    centre = torch.tensor([0.5, -0.5])
    for step in range(200):
        loss, _ = phase.loss(Batch(centre + 0.2 * torch.randn(128, 2, generator=g)), step)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    x = method.sample(1000, generator=torch.Generator().manual_seed(1), sampler="ddpm", steps=100)
    assert torch.allclose(x.mean(0), centre, atol=0.1)
    assert torch.allclose(x.std(0), torch.tensor([0.2, 0.2]), atol=0.05)


# ---- recipes -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ddpm-ring8", "ddpm-digits", "cfg-digits"])
def test_recipes_load_and_build(name):
    from stablegen.recipe import load_recipe

    recipe = load_recipe(name)
    assert isinstance(recipe.model, DiffusionConfig) and recipe.description
    assert set(recipe.optim) == {"main"}
    info = RING if recipe.data.name == "ring8" else DataInfo(
        "digits", "image", (1, 8, 8), num_classes=10 if recipe.data.labels else None, levels=17)
    method = build(recipe.model, info)
    assert method.conditional == (name == "cfg-digits")
