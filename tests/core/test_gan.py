"""Each GAN switch does what its paper says."""

import pytest
import torch
import torch.nn.functional as F

from stablegen.base import Batch, DataInfo
from stablegen.data.augment import ada_adjust, diff_augment
from stablegen.methods.gan import GanConfig, build, pack_samples
from stablegen.nets.layers import MinibatchStdDev

VEC = DataInfo("ring8", "vector", (2,))
IMG = DataInfo("digits", "image", (1, 8, 8), num_classes=10)


def gan(info=VEC, **kw):
    torch.manual_seed(0)
    base = {"width": 32, "depth": 2, "z_dim": 8} | ({"net": "dcgan", "width": 8} if info.kind == "image" else {})
    return build(GanConfig(**base | kw), info)


@pytest.mark.parametrize("loss", ["ns", "minimax", "hinge", "wgan", "lsgan"])
def test_losses_match_their_formulas(loss):
    m = gan(loss=loss)
    dr, df = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    expected = {
        "ns": F.softplus(-dr) + F.softplus(df),
        "minimax": F.softplus(-dr) + F.softplus(df),
        "hinge": F.relu(1 - dr) + F.relu(1 + df),
        "wgan": df - dr,
        "lsgan": 0.5 * (dr - 1) ** 2 + 0.5 * df**2,
    }[loss]
    assert torch.allclose(m.critic_loss(dr, df), expected)


@pytest.mark.parametrize("loss", ["ns", "minimax"])
def test_the_minimax_generator_loss_saturates_and_the_non_saturating_one_does_not(loss):
    """Goodfellow et al. 2014, sec. 3: G minimizing log(1 - D(G(z))) gets no gradient where the
    critic is sure (d -> -inf); maximizing log D(G(z)) instead gets the most there."""
    m = gan(loss=loss)
    d_fake = torch.tensor([-8.0, 0.0], requires_grad=True)
    m.D.forward = lambda x, y=None: d_fake  # noqa: E731  the critic's verdicts, fixed
    loss_g, _ = m.g_loss(Batch(torch.zeros(2, 2)), 0)
    assert torch.allclose(loss_g, torch.log1p(-torch.sigmoid(d_fake)) if loss == "minimax"
                          else -F.logsigmoid(d_fake))
    (grad,) = torch.autograd.grad(loss_g.sum(), d_fake)
    sure, unsure = grad.abs().tolist()
    assert (sure < 1e-3 and unsure == pytest.approx(0.5)) if loss == "minimax" else sure > 0.99


def test_one_sided_label_smoothing_targets_real_at_1_minus_s():
    m = gan(loss="ns", label_smoothing=0.1)
    dr, df = torch.tensor([0.3]), torch.tensor([0.0])
    bce_real = F.binary_cross_entropy_with_logits(dr, torch.tensor([0.9]))
    assert torch.allclose(m.critic_loss(dr, df), bce_real + F.softplus(df))  # fakes keep target 0


def test_gradient_penalty_drives_critic_gradient_norm_to_one():
    """WGAN-GP: with only the penalty as loss, |grad D| at interpolates converges to 1."""
    m = gan(loss="wgan", gp_weight=10.0)
    real, fake = torch.randn(256, 2) * 2, torch.randn(256, 2)
    opt = torch.optim.Adam(m.D.parameters(), lr=1e-3)
    for _ in range(300):
        opt.zero_grad()
        m.gradient_penalty(real, fake, None).mean().backward()
        opt.step()
    x = (0.5 * real + 0.5 * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(m.D(x).sum(), x)
    assert abs(g.norm(dim=1).mean().item() - 1.0) < 0.05  # starts far from 1 (~0.1 at init)


def test_spectral_norm_gives_unit_top_singular_value():
    m = gan(spectral_norm=True)
    m.D.train()
    for _ in range(20):  # power iterations run on each training forward
        m.D(torch.randn(16, 2))
    m.D.eval()
    for layer in [mod for mod in m.D.modules() if isinstance(mod, torch.nn.Linear)]:
        sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
        assert abs(sigma.item() - 1.0) < 0.02


def test_r1_penalty_is_lazy_and_scaled():
    m = gan(loss="ns", r1_weight=2.0, r1_interval=4)
    batch = Batch(torch.randn(32, 2))
    torch.manual_seed(1)
    _, logs_on = m.d_loss(batch, step=8)
    torch.manual_seed(1)
    _, logs_off = m.d_loss(batch, step=9)
    assert "r1" in logs_on and "r1" not in logs_off
    # gamma/2 * interval * |grad|^2 equals the difference of the two losses on the same draw
    torch.manual_seed(1)
    with_r1, logs = m.d_loss(batch, step=8)
    torch.manual_seed(1)
    without, _ = m.d_loss(batch, step=9)
    assert torch.allclose(with_r1.mean() - without.mean(), 4 * 2.0 / 2 * logs["r1"], rtol=1e-4)


def test_packing_concatenates_consecutive_samples():
    x = torch.arange(6 * 2, dtype=torch.float).view(6, 2)
    p = pack_samples(x, 3)
    assert p.shape == (2, 6) and p[1].tolist() == x[3:6].flatten().tolist()
    img = torch.randn(4, 1, 8, 8)
    pi = pack_samples(img, 2)
    assert pi.shape == (2, 2, 8, 8) and torch.equal(pi[1, 1], img[3, 0])
    with pytest.raises(ValueError, match="not divisible"):
        pack_samples(torch.randn(5, 2), 2)
    m = gan(pack=4)
    assert m.D(pack_samples(torch.randn(8, 2), 4)).shape == (2,)


def test_instance_noise_anneals_linearly_to_zero():
    m = gan(instance_noise=0.2, instance_noise_steps=100)
    assert m.instance_noise_std(0) == pytest.approx(0.2)
    assert m.instance_noise_std(50) == pytest.approx(0.1)
    assert m.instance_noise_std(150) == 0.0


def test_minibatch_stddev_feature():
    x = torch.tensor([[0.0, 0.0], [2.0, 2.0], [0.0, 0.0], [2.0, 2.0]])
    out = MinibatchStdDev(group=2)(x)
    # groups are {0, 2} and {1, 3}: identical samples, so std 0 everywhere
    assert out.shape == (4, 3) and torch.allclose(out[:, 2], torch.zeros(4), atol=1e-3)
    out = MinibatchStdDev(group=4)(x)
    assert torch.allclose(out[:, 2], torch.ones(4), atol=1e-3)  # std of {0, 2, 0, 2} is 1


def test_latent_prior_is_normal_or_uniform():
    # 160,000 coordinates: the mean of |z| is within 0.01 of its expectation (standard error
    # < 0.002 for both priors, so 0.01 is > 5 standard errors); uniform draws stay in [-1, 1]
    g = torch.Generator().manual_seed(0)
    z = gan(latent="uniform").latent(20_000, g)
    assert z.shape == (20_000, 8) and z.min() >= -1 and z.max() <= 1
    assert abs(z.abs().mean().item() - 0.5) < 0.01  # E|U(-1, 1)| = 1/2
    z = gan().latent(20_000, g)
    assert abs(z.abs().mean().item() - (2 / torch.pi) ** 0.5) < 0.01  # E|N(0, 1)| = sqrt(2/pi)
    m = gan(latent="uniform")
    x1 = m.sample(16, generator=torch.Generator().manual_seed(3))
    x2 = m.G(m.latent(16, torch.Generator().manual_seed(3), device="cpu"))
    assert torch.equal(x1, x2)  # sample() draws from the same prior


def test_conditional_gan_uses_labels():
    m = gan(IMG, conditional=True)
    y = torch.tensor([3, 3, 7, 7])
    x = m.sample(4, generator=torch.Generator().manual_seed(0), labels=y)
    assert x.shape == (4, 1, 8, 8)
    loss, _ = m.d_loss(Batch(torch.randn(4, 1, 8, 8), y), 0)
    assert loss.shape == (4,)
    with pytest.raises(ValueError, match="labelled data"):
        build(GanConfig(net="dcgan", conditional=True), DataInfo("digits", "image", (1, 8, 8)))


def test_n_critic_sets_phase_repeats_and_the_ema_module_is_g():
    m = gan(n_critic=5)
    d, g = m.phases()
    assert (d.name, d.repeats, g.name, g.repeats) == ("d", 5, "g", 1)
    assert m.ema_module() is m.G


def test_regularization_boost_raises_only_active_penalties():
    m = gan(gp_weight=1.0)
    assert m.regularization_boost(2.0) and m.gp_weight.item() == 2.0 and m.r1_weight.item() == 0.0
    assert not gan().regularization_boost(2.0)


def test_diffaugment_is_differentiable_and_keeps_shape():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, p=0.0), x)  # ADA at p = 0 is the identity


def test_ada_moves_p_toward_target():
    assert ada_adjust(0.0, rt=0.9, target=0.6, batch=64, interval=4, speed_img=512) == pytest.approx(0.5)
    assert ada_adjust(0.5, rt=0.1, target=0.6, batch=64, interval=4, speed_img=512) == pytest.approx(0.0)
    m = gan(IMG, augment="ada", ada_interval=1, ada_speed=64)
    m.d_loss(Batch(torch.randn(8, 1, 8, 8)), 0)
    m._last["d_real"] = torch.ones(8)  # the critic is sure every real is real: overfitting
    for step in range(20):
        m.on_step_end(step, {})
    assert m.ada_p.item() > 0.5


@pytest.mark.parametrize("loss, d_real, rt", [("hinge", 0.3, 1.0), ("lsgan", 0.3, -1.0), ("lsgan", 0.7, 1.0)])
def test_ada_reads_the_sign_of_d_real_about_the_losss_decision_threshold(loss, d_real, rt):
    """r_t = E[sign(D(real))] (Karras et al. 2020, eq. 1) about the output that separates real from
    fake: 0 for a logit or a score, 0.5 between the least-squares targets 0 and 1."""
    m = gan(IMG, loss=loss, augment="ada")
    m._last = {"d_real": torch.full((8,), d_real), "d_fake": torch.zeros(8)}
    for step in range(200):
        m.on_step_end(step, {})
    assert m.ada_rt.item() == pytest.approx(rt, abs=1e-6)


def test_minibatch_stddev_keeps_float32_statistics_under_fp16_autocast():
    x = torch.full((8, 4), 0.5, requires_grad=True)  # no spread: the std is its 1e-8 floor
    with torch.autocast("cpu", dtype=torch.float16):
        y = MinibatchStdDev(4)(torch.nn.functional.linear(x, torch.eye(4)))
    assert y.dtype == torch.float16
    y.sum().backward()
    assert torch.isfinite(x.grad).all()  # in half precision the floor underflowed: sqrt'(0) = inf


@pytest.mark.parametrize("net, size", [("dcgan", 8), ("dcgan", 16), ("resnet", 32)])
def test_conv_nets_shapes(net, size):
    info = DataInfo("x", "image", (3, size, size))
    m = build(GanConfig(net=net, width=8, z_dim=4), info)
    x = m.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, size, size) and x.abs().max() <= 1


def _train_few_steps(m, x, steps=15):
    """A few d / g updates with Adam on a fixed batch, every draw seeded."""
    m.data_init(Batch(x))
    opts = [torch.optim.Adam(p.params, lr=1e-2) for p in m.phases()]
    for step in range(steps):
        for phase, opt in zip(m.phases(), opts):
            torch.manual_seed(100 + step)
            opt.zero_grad()
            loss, _ = phase.loss(Batch(x), step)
            loss.mean().backward()
            opt.step()
    return m.sample(64, generator=torch.Generator().manual_seed(0))


def test_standardize_makes_training_invariant_to_the_data_scale():
    """Efficient BackProp (LeCun et al. 1998, sec. 4.3): with standardized inputs, the same
    recipe trains the same way on c * x + b as on x. Shift and scale the data and the run is
    the same run in other units (up to float rounding); without standardization it is not."""
    x = torch.randn(128, 2) * torch.tensor([0.5, 2.0]) + torch.tensor([1.0, -1.0])
    scale, shift = torch.tensor([30.0, 7.0]), torch.tensor([-50.0, 4.0])
    kw = {"loss": "ns", "r1_weight": 1.0, "mbstd": True}
    a = _train_few_steps(gan(standardize=True, **kw), x)
    b = _train_few_steps(gan(standardize=True, **kw), x * scale + shift)
    assert torch.allclose((b - shift) / scale, a, atol=1e-4)
    plain_a = _train_few_steps(gan(**kw), x)
    plain_b = _train_few_steps(gan(**kw), x * scale + shift)
    assert not torch.allclose((plain_b - shift) / scale, plain_a, atol=1e-2)


def test_standardize_sets_and_checkpoints_the_data_statistics():
    m = gan(standardize=True)
    x = torch.randn(500, 2) * torch.tensor([3.0, 0.1]) + torch.tensor([5.0, -2.0])
    m.data_init(Batch(x))
    seen = m._critic_input(x, step=0)
    assert torch.allclose(seen.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(seen.std(0, unbiased=False), torch.ones(2), atol=1e-5)
    z = m.latent(16, torch.Generator().manual_seed(3), device="cpu")
    assert torch.allclose(m._to_data(m.G(z)), m.data_mean + m.data_std * m.G(z))
    assert {"data_mean", "data_std"} <= set(m.state_dict())  # so checkpoints and rollbacks carry them
    const = gan(standardize=True)
    const.data_init(Batch(torch.stack([torch.randn(64), torch.full((64,), 2.0)], dim=1)))
    assert const.data_std[1] == 1.0 and const.data_mean[1] == 2.0  # a constant feature is only shifted
    assert "data_mean" not in gan().state_dict()


def test_standardize_is_for_vector_data():
    with pytest.raises(ValueError, match="standardize=true is for vector data"):
        gan(IMG, standardize=True)


# ---- weight normalization (Salimans & Kingma 2016) with a shrunk direction ----------------------
def _wn_linear(scale, seed=0):
    from stablegen.nets.layers import maybe_wn

    torch.manual_seed(seed)
    return maybe_wn(torch.nn.Linear(16, 8), scale)


def _direction_turn(layer, lr, steps=1):
    """Angle (radians, mean over output units) the effective weight turns in `steps` Adam steps
    on a fixed regression target."""
    torch.manual_seed(1)
    x, target = torch.randn(64, 16), torch.randn(64, 8)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    w0 = layer.weight.detach().clone()
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(layer(x), target).backward()
        opt.step()
    cos = F.cosine_similarity(w0, layer.weight.detach(), dim=1).clamp(-1, 1)
    return torch.arccos(cos).mean().item()


def test_weight_norm_leaves_the_layer_unchanged_at_init_and_is_scale_invariant():
    torch.manual_seed(0)
    plain = torch.nn.Linear(16, 8)
    wn = _wn_linear(0.1)
    x = torch.randn(32, 16)
    assert torch.allclose(wn(x), plain(x), atol=1e-5)  # g = |v0|, v shrunk: w unchanged
    v = wn.parametrizations.weight.original1
    assert torch.allclose(v.norm(dim=1), 0.1 * plain.weight.norm(dim=1), atol=1e-6)
    out = wn(x)
    with torch.no_grad():
        v.mul_(7.0)  # w = g v / |v| does not see |v|
    assert torch.allclose(wn(x), out, atol=1e-5)
    wn(x).square().sum().backward()  # so the gradient in v is orthogonal to v, row by row
    assert (v.grad * v).sum(dim=1).abs().max() < 1e-4 * v.grad.norm() * v.norm()


def test_weight_norm_turns_a_shrunk_direction_faster_at_the_same_lr():
    """The effective rate of a scale-invariant weight is lr / |v| (Adam's step has a size of
    about lr per coordinate whatever the gradient's scale): shrinking v 10x turns the weights
    about 10x further in one step. Tolerance 8-12x: Adam's first step is exactly lr sign(grad)
    per coordinate, so the ratio is 10 up to the part of the step along v (second order)."""
    small, big = _direction_turn(_wn_linear(0.1), 1e-4), _direction_turn(_wn_linear(1.0), 1e-4)
    assert 8 < small / big < 12


def test_weight_norm_grows_the_direction_at_a_high_lr_and_slows_itself():
    """Auto rate-tuning (Arora, Li & Lyu 2019): Adam's steps are near-orthogonal to v, so |v|
    grows with each one and the turn per step falls; a 30x higher lr turns the weights much
    less than 30x further over 200 steps (measured 1.5x, asserted < 4x), where a plain layer
    turns 18x further (asserted > 10x). |v| measured 2.07x after 20 steps (asserted > 1.5x)."""
    layer = _wn_linear(0.1)
    v = layer.parametrizations.weight.original1
    n0 = v.norm().item()
    first = _direction_turn(layer, 3e-3, steps=20)
    assert v.norm().item() > 1.5 * n0
    later = _direction_turn(layer, 3e-3, steps=20)
    assert later < 0.5 * first
    fast, slow = _direction_turn(_wn_linear(0.1), 3e-3, 200), _direction_turn(_wn_linear(0.1), 1e-4, 200)
    assert fast / slow < 4
    torch.manual_seed(0)
    plain_fast = _direction_turn(torch.nn.Linear(16, 8), 3e-3, 200)
    torch.manual_seed(0)
    assert plain_fast / _direction_turn(torch.nn.Linear(16, 8), 1e-4, 200) > 10


def test_weight_norm_builds_normalized_mlp_nets_and_refuses_what_it_cannot_do():
    m = gan(weight_norm=0.3)
    wn_layers = [mod for mod in m.modules() if hasattr(mod, "parametrizations")]
    assert len(wn_layers) == 2 * 3  # depth 2 + output layer, in G and in D
    names = [n for n, _ in m.named_parameters()]
    assert sum(n.endswith("parametrizations.weight.original1") for n in names) == 6  # v, trained
    assert sum(n.endswith("parametrizations.weight.original0") for n in names) == 6  # g, trained
    x = m.sample(16, generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    assert not any(hasattr(mod, "parametrizations") for mod in gan().modules())
    with pytest.raises(ValueError, match="weight_norm is implemented for net=mlp"):
        gan(IMG, weight_norm=0.3)
    with pytest.raises(ValueError, match="choose one"):
        gan(weight_norm=0.3, spectral_norm=True)


def test_weight_norm_state_round_trips_through_a_state_dict():
    """Checkpoints and rollbacks carry g and v (the parametrization's original0 / original1)."""
    a = gan(weight_norm=0.3)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.01 * torch.randn_like(p))
    b = gan(weight_norm=0.3)
    b.load_state_dict(a.state_dict())
    z = torch.randn(8, 8)
    assert torch.equal(a.G(z), b.G(z))
