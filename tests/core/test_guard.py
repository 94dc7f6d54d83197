"""The StabilityGuard: each detector provoked on purpose, and torture runs: recipes made
unstable on purpose, where a plain loop dies or collapses and stablegen ends with finite
weights and the events that say what it did."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stablegen.api import build_method, seed_everything
from stablegen.base import Batch, DataInfo, Method, Phase
from stablegen.data import Dataset, load_dataset
from stablegen.data.toys import mixture_means
from stablegen.recipe import DataConfig, GuardConfig, load_recipe
from stablegen.train.ema import EMA
from stablegen.train.guard import Event, StabilityGuard
from stablegen.train.loop import Trainer


class Probe(Method):
    """A one-layer regressor whose loss the tests can poison, scale or make saturate."""

    fast_sampling = True

    def __init__(self):
        super().__init__()
        self.info = DataInfo("probe", "vector", (2,))
        self.lin = torch.nn.Linear(2, 2)
        self.scale = {}  # step -> loss multiplier, used once (a rolled-back step runs clean)
        self.poison_from = None  # every step from here on has a NaN loss
        self.fake_health = {}

    def phases(self):
        return [Phase("main", list(self.parameters()), self.loss)]

    def loss(self, batch, step):
        out = (self.lin(batch.x) - batch.x).pow(2).sum(1) + 1.0
        if self.poison_from is not None and step >= self.poison_from:
            return out * float("nan"), {}
        return out * self.scale.pop(step, 1.0), {}

    def sample(self, n, *, generator=None, **kw):
        with torch.no_grad():
            return self.lin(torch.randn(n, 2, generator=generator))

    def health(self):
        return dict(self.fake_health)


def probe_trainer(tmp_path, data="moons", method=Probe, **guard):
    recipe = load_recipe({"model": {"family": "gan"}, "data": {"name": data, "n": 512, "batch_size": 64},
                          "optim": {"main": {"lr": 1e-2}}},
                         {"train.steps": 300, "train.progress": False, "train.sample_every": 0,
                          "train.checkpoint_every": 0, "guard.window": 20, "guard.snapshot_every": 20, "guard.spike_after": 0,
                          "guard.check_every": 10, **{f"guard.{k}": v for k, v in guard.items()}})
    seed_everything(0, True)
    data = load_dataset(recipe.data)
    torch.manual_seed(0)
    return Trainer(method(), data, recipe, tmp_path)


def events(tmp_path):
    return [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]


def test_no_spike_verdicts_during_the_opening_transient():
    """A loss that jumps 10x at step 60 (a GAN's G loss as its critic learns) is no spike before
    guard.spike_after; the same jump after it is one, after `patience` outlier steps."""
    def feed(start):
        g = StabilityGuard(GuardConfig(window=20, patience=2, spike_after=100))
        gen = torch.Generator().manual_seed(0)
        for step in range(start, start + 60):
            g.allow_update(step, "g", torch.tensor(0.7 + 0.01 * torch.rand((), generator=gen).item()), torch.tensor(1.0))
        return g, [g.allow_update(start + 60 + i, "g", torch.tensor(7.0), torch.tensor(1.0)) for i in range(2)]

    early, allowed = feed(0)
    assert early.events == [] and allowed == [True, True]
    late, allowed = feed(100)
    assert [e.detector for e in late.events] == ["loss_spike"] and allowed == [True, False]


def test_loss_spike_rolls_back_with_lower_lr(tmp_path):
    t = probe_trainer(tmp_path, spike="rollback", explosion="warn", patience=2)
    for s in (150, 151):
        t.method.scale[s] = 1e4
    assert t.fit() == "finished"
    ev = [e for e in events(tmp_path) if e["detector"] == "loss_spike"]
    assert ev and ev[0]["action"] == "rollback" and ev[0]["step"] == 151
    assert t.guard.rollbacks == 1 and t.guard.lr_scale == 0.5
    assert t.scheds["main"].get_last_lr()[0] == pytest.approx(0.5e-2)


def test_a_rollback_restores_weights_optimizer_ema_and_rng_and_says_where_it_went(tmp_path):
    t = probe_trainer(tmp_path, snapshot_every=20)
    t.ema = EMA.of(t.method, 0.9)
    t.fit(stop_at=40)  # the last snapshot: step 40
    snap = copy.deepcopy(t.snapshot)
    assert snap["step"] == 40
    for step in range(40, 47):  # the run goes on: weights, Adam moments, EMA and RNG all move
        t._train_step(step)
        t.step += 1
    torch.rand(3)
    loader_pos = t.loader.state_dict()["pos"]
    event = Event(47, "loss_spike", "rollback", "probe")
    t._rollback(event)
    assert t.step == 40
    same = lambda a, b: a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(t.method.state_dict(), snap["method"])
    opt = t.optims["main"].state_dict()["state"]
    assert all(same(opt[i], snap["optims"]["main"]["state"][i]) for i in opt)
    assert all(torch.equal(a, b) for a, b in zip(t.ema.state_dict().values(), snap["ema"].values()))
    assert torch.equal(torch.get_rng_state(), snap["rng"])
    assert t.loader.state_dict()["pos"] == loader_pos  # the data moves on: a bad batch is not replayed
    assert event.evidence == {"to_step": 40, "lr_scale": 0.5}
    assert event.message.endswith("rolled back to step 40, learning rate x 0.5")


def test_each_rollback_raises_r1_again_even_to_the_same_snapshot(tmp_path):
    recipe, data, method = _gan(tmp_path, {"train.steps": 20, "model.r1_weight": 0.5, "guard.snapshot_every": 1000})
    t = Trainer(method, data, recipe, tmp_path)
    t.fit(stop_at=10)
    for k in (1, 2):  # both to the snapshot of step 0, which holds the recipe's weight
        event = Event(10, "loss_spike", "rollback", "probe")
        t._rollback(event)
        assert method.r1_weight.item() == 0.5 * 2**k and event.evidence["reg_scale"] == 2**k
        assert event.message.endswith(f"GP / R1 weight x {2**k}")
    t._take_snapshot()  # a snapshot that holds the boosted weight: the next boost is on top of it
    t._rollback(Event(10, "loss_spike", "rollback", "probe"))
    assert method.r1_weight.item() == 0.5 * 2**3
    state = t.guard.state_dict()
    h = StabilityGuard(t.recipe.guard)
    h.load_state_dict(state)
    assert h.reg_scale == 8 and h.lr_scale == t.guard.lr_scale  # and it travels in checkpoints


def test_the_run_summary_counts_events_by_detector(tmp_path):
    t = probe_trainer(tmp_path, spike="rollback", explosion="warn", patience=2)
    t.method.scale.update({40: float("nan"), 150: 1e4, 151: 1e4})
    t.fit()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["events"] == {"nonfinite": 1, "loss_spike": 1, "grad_explosion": 1}  # the last one warns
    assert summary["rollbacks"] == 1


def test_lr_drop_from_keeps_the_lr_on_the_first_rollback_and_lowers_it_after(tmp_path):
    """guard.lr_drop_from 2: a lone spike is rolled back at the same learning rate; a second
    rollback of the run lowers it by lr_factor."""
    t = probe_trainer(tmp_path, spike="rollback", explosion="warn", patience=2, lr_drop_from=2)
    for s in (150, 151, 250, 251):
        t.method.scale[s] = 1e4
    t.fit(stop_at=200)
    assert t.guard.rollbacks == 1 and t.guard.lr_scale == 1.0
    assert t.scheds["main"].get_last_lr()[0] == pytest.approx(1e-2)
    assert t.fit() == "finished"
    assert t.guard.rollbacks == 2 and t.guard.lr_scale == 0.5
    assert t.scheds["main"].get_last_lr()[0] == pytest.approx(0.5e-2)


def test_no_snapshot_is_taken_inside_a_spike_and_the_rollback_goes_before_it(tmp_path):
    # outliers at steps 199-201 (patience 3): the snapshot due at step 200 would hold the
    # spiking state, so it waits; the rollback at 201 returns to step 180, and the run recovers
    t = probe_trainer(tmp_path, spike="rollback", explosion="warn", patience=3)
    for s in (199, 200, 201):
        t.method.scale[s] = 1e4
    t.fit(stop_at=200)
    assert t.snapshot["step"] == 180 and t.snapshot_due and not t.guard.healthy()
    assert t.fit() == "finished"
    ev = [e for e in events(tmp_path) if e["detector"] == "loss_spike"]
    assert [(e["step"], e["action"]) for e in ev] == [(201, "rollback")] and t.guard.rollbacks == 1


def test_gradient_explosion_update_is_vetoed(tmp_path):
    t = probe_trainer(tmp_path, spike="warn", explosion="skip", patience=1)
    t.method.scale[100] = 1e6
    t.fit(stop_at=100)
    before = [p.detach().clone() for p in t.method.parameters()]
    t._train_step(100)
    assert all(torch.equal(a, b) for a, b in zip(before, t.method.parameters()))  # not applied
    assert any(e.detector == "grad_explosion" and e.action == "skip" for e in t.guard.events)


def test_nonfinite_loss_never_reaches_the_weights(tmp_path):
    t = probe_trainer(tmp_path)
    t.method.scale.update({40: float("nan"), 41: float("inf")})
    assert t.fit() == "finished"
    assert all(torch.isfinite(p).all() for p in t.method.parameters())
    ev = [e for e in events(tmp_path) if e["detector"] == "nonfinite"]
    assert [e["step"] for e in ev] == [40, 41] and {e["action"] for e in ev} == {"skip"}


def test_persistent_nonfinite_rolls_back_then_stops_with_diagnosis(tmp_path):
    t = probe_trainer(tmp_path, max_skips=3, max_rollbacks=2)
    t.method.poison_from = 50
    assert t.fit() == "stopped"
    actions = [e["action"] for e in events(tmp_path)]
    assert actions.count("rollback") == 2 and actions[-1] == "stop"
    assert "rollback budget of 2 spent" in json.loads((tmp_path / "summary.json").read_text())["message"]
    assert all(torch.isfinite(p).all() for p in t.method.parameters())


def test_weights_overflowed_by_a_finite_update_roll_back_at_once(tmp_path):
    """An update with finite gradients can still overflow the weights (a learning rate far too
    high); then every later loss is non-finite and skipping cannot help: the guard rolls back at
    the first one, and no snapshot is ever taken of the broken weights."""
    t = probe_trainer(tmp_path, max_skips=10)
    t.fit(stop_at=90)
    good = t.snapshot["step"]
    with torch.no_grad():
        t.method.lin.weight[0, 0] = float("inf")  # what the overflowing optimizer step left
    t.snapshot_due = True
    assert not t._periodic(95)  # due, but the weights are not finite: no snapshot
    assert t.snapshot["step"] == good
    assert t.fit() == "finished"
    ev = [e for e in events(tmp_path) if e["detector"] == "nonfinite"]
    assert len(ev) == 1 and ev[0]["action"] == "rollback" and ev[0]["step"] == 90
    assert "the weights themselves are non-finite" in ev[0]["message"]
    assert all(torch.isfinite(p).all() for p in t.method.parameters())


class Players(Method):
    """Two probe players named as a GAN's, d and g. From step `saturate_from` on the critic
    reports accuracy 1; from `vanish_from` on the generator's loss (and gradient) is scaled by
    1e-3."""

    fast_sampling = False

    def __init__(self, saturate_from=100, vanish_from=None):
        super().__init__()
        self.info = DataInfo("probe", "vector", (2,))
        self.d, self.g = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        self.saturate_from, self.vanish_from, self.step = saturate_from, vanish_from, 0

    def phases(self):
        return [Phase("d", list(self.d.parameters()), self.loss_of(self.d)),
                Phase("g", list(self.g.parameters()), self.loss_of(self.g))]

    def loss_of(self, net):
        def loss(batch, step):
            self.step = step
            out = (net(batch.x) - batch.x).pow(2).sum(1) + 1.0
            vanished = net is self.g and self.vanish_from is not None and step >= self.vanish_from
            return out * (1e-3 if vanished else 1.0), {}
        return loss

    def sample(self, n, *, generator=None, **kw):
        return torch.randn(n, 2, generator=generator)

    def health(self):
        return {"d_acc": 1.0 if self.step >= self.saturate_from else 0.6}


def players_trainer(tmp_path, method, **guard):
    recipe = load_recipe({"model": {"family": "gan"}, "data": {"name": "moons", "n": 512, "batch_size": 64},
                          "optim": {"d": {"lr": 1e-2}, "g": {"lr": 1e-2}}},
                         {"train.steps": 300, "train.progress": False, "train.sample_every": 0,
                          "train.checkpoint_every": 0, "guard.window": 20, "guard.snapshot_every": 20,
                          "guard.check_every": 10, "guard.saturation_steps": 30,
                          **{f"guard.{k}": v for k, v in guard.items()}})
    seed_everything(0, True)
    data = load_dataset(recipe.data)
    torch.manual_seed(0)
    return Trainer(method, data, recipe, tmp_path)


def test_saturation_needs_the_generator_gradient_to_vanish(tmp_path):
    t = players_trainer(tmp_path / "a", Players(saturate_from=100))
    t.fit()  # a sure critic, but the generator still gets its gradient: no event
    assert not [e for e in t.guard.events if e.detector == "d_saturation"]

    t = players_trainer(tmp_path / "b", Players(saturate_from=100, vanish_from=100), saturation="stop")
    assert t.fit() == "stopped"
    sat = [e for e in t.guard.events if e.detector == "d_saturation"]
    assert len(sat) == 1 and sat[0].action == "stop" and 130 <= sat[0].step <= 150
    ev = sat[0].evidence
    assert ev["d_acc"] == 1.0 and ev["g_grad"] < 0.01 * ev["g_grad_ref"]  # the loss was scaled by 1e-3


def test_a_critic_saturated_from_the_start_gets_one_warning_and_no_rollback(tmp_path):
    t = players_trainer(tmp_path, Players(saturate_from=0))
    t.fit()
    sat = [e for e in events(tmp_path) if e["detector"] == "d_saturation"]
    assert [(e["step"], e["action"]) for e in sat] == [(30, "warn")] and t.guard.rollbacks == 0
    assert "since the start" in sat[0]["message"]


def test_saturation_on_a_gan_with_the_saturating_loss(tmp_path):
    """The minimax loss log(1 - D(G(z))) (Goodfellow et al. 2014) with a critic 50x faster than the
    generator: the critic becomes sure and the generator's gradient fades (Arjovsky & Bottou
    2017, Thm. 2.4). The non-saturating loss in the same game keeps the gradient (it grows):
    no event."""
    over = {"train.steps": 1000, "optim.d.lr": 5e-4, "optim.g.lr": 1e-5, "model.mbstd": False,
            "optim.d.optimism": False, "optim.g.optimism": False, "optim.d.lookahead": 0, "optim.g.lookahead": 0,
            "guard.check_every": 10, "guard.saturation_steps": 100, "guard.saturation": "stop"}
    recipe, data, method = _gan(tmp_path, {**over, "model.loss": "minimax"})
    t = Trainer(method, data, recipe, tmp_path / "minimax")
    assert t.fit() == "stopped"  # measured: at step 880, 6.5 % of the level the gradient had
    ev = next(e for e in t.guard.events if e.detector == "d_saturation").evidence
    assert ev["d_acc"] >= 0.99 and ev["g_grad"] < 0.1 * ev["g_grad_ref"]
    recipe, data, method = _gan(tmp_path, {**over, "model.loss": "ns"})
    t = Trainer(method, data, recipe, tmp_path / "ns")
    assert t.fit() == "finished"
    assert not [e for e in t.guard.events if e.detector == "d_saturation"]


def test_fp16_overflow_is_the_scalers_until_it_persists(tmp_path):
    """Under fp16 with a GradScaler an overflowing gradient is routine (the scaler halves its
    scale and skips); the same non-finite gradient max_skips times in a row is not an overflow."""
    t = probe_trainer(tmp_path, max_skips=4, max_rollbacks=1)
    t.recipe.train.precision, t.recipe.train.grad_scaler = "fp16", True
    t = Trainer(t.method, t.data, t.recipe, tmp_path)
    assert t.scaler.is_enabled() and t.guard.uses_scaler
    t.fit(stop_at=50)
    before, overflows, seen = [p.detach().clone() for p in t.method.parameters()], t.guard.overflows, len(t.guard.events)
    nan_grad = lambda p: p.register_hook(lambda g: g * float("nan"))  # noqa: E731  a finite loss, NaN gradient
    hooks = [nan_grad(p) for p in t.method.parameters()]
    for step in range(50, 53):
        t._train_step(step)
    assert t.guard.overflows == overflows + 3 and len(t.guard.events) == seen  # routine so far
    assert all(torch.equal(a, b) for a, b in zip(before, t.method.parameters()))
    t._train_step(53)
    ev = t.guard.events[-1]
    assert ev.detector == "nonfinite" and ev.action == "rollback" and "GradScaler" in ev.message
    for h in hooks:
        h.remove()


def test_mode_collapse_by_sample_diversity(tmp_path):
    t = probe_trainer(tmp_path, collapse="warn", collapse_after=100, patience=2, spike="warn", explosion="warn")
    t.fit(stop_at=150)
    assert not [e for e in t.guard.events if e.detector == "mode_collapse"]  # healthy so far
    with torch.no_grad():
        t.method.lin.weight.zero_()  # every sample is now the bias: one mode
    t.method.lin.weight.requires_grad_(False)
    t.fit()
    ev = [e for e in t.guard.events if e.detector == "mode_collapse"]
    assert ev and ev[0].evidence["diversity_ratio"] < 0.05


def test_a_generator_that_has_not_spread_out_gets_one_warning_and_no_rollback(tmp_path):
    # the probe's samples are lin(z); with zero weights they are one point from the start: a
    # rollback could only return to that, so the guard warns once and the run goes on
    t = probe_trainer(tmp_path, collapse="rollback", collapse_after=0, patience=2, spike="warn", explosion="warn")
    with torch.no_grad():
        t.method.lin.weight.zero_()
    t.method.lin.weight.requires_grad_(False)
    assert t.fit() == "finished"
    ev = [e for e in t.guard.events if e.detector == "mode_collapse"]
    assert len(ev) == 1 and ev[0].action == "warn" and "not spread out" in ev[0].message
    assert t.guard.rollbacks == 0


def test_after_a_rollback_diversity_is_judged_from_the_restored_state():
    """A rollback to a snapshot taken before the generator spread out must not read the slower
    re-growth as a collapse (which would roll back again, halve the learning rate again, and
    spend the budget on a generator that is fine)."""
    g = StabilityGuard(GuardConfig(collapse="rollback", collapse_ratio=0.3, patience=2))
    g.check_health(600, {}, 0.1)
    g.on_snapshot()  # the snapshot's generator: 0.1 of the data's diversity
    for step, r in ((650, 0.5), (700, 0.8), (750, 0.9)):
        g.check_health(step, {}, r)
    assert g.events == []
    g.on_rollback()  # e.g. for a loss spike: back to the state of step 600
    assert g.peak_diversity == pytest.approx(0.1)
    for step, r in ((650, 0.15), (700, 0.2), (750, 0.25)):  # re-growing, at the lower learning rate
        g.check_health(step, {}, r)
    assert [e.action for e in g.events] == ["warn"] and g.take_verdict() is None
    for step, r in ((800, 0.6), (850, 0.1), (900, 0.1)):  # spread out, then fell: a collapse
        g.check_health(step, {}, r)
    assert [e.action for e in g.events] == ["warn", "rollback"] and g.events[-1].evidence["peak"] == 0.6


def test_lost_modes_on_a_labelled_toy_roll_back(tmp_path):
    """ring8: the probe's samples lin(z) are a blob over the ring (every mode gets its share, at
    its nearest mean); moved off to one side they stay as spread out (no diversity verdict) but
    leave most modes without samples, and the coverage check rolls back to the snapshot."""
    t = probe_trainer(tmp_path, data="ring8", coverage="rollback", collapse_after=0, patience=2,
                      spike="warn", explosion="warn")
    t.fit(stop_at=100)
    assert t.guard.coverage.value == 1.0 and t.guard.events == []
    t.method.lin.weight.requires_grad_(False)
    with torch.no_grad():
        t.method.lin.weight.copy_(torch.eye(2))
        t.method.lin.bias.copy_(torch.tensor([4.0, 0.0]))  # the blob beside the mode at angle 0
    t.fit(stop_at=140)
    assert not [e for e in t.guard.events if e.detector == "mode_collapse"]
    ev = [e for e in t.guard.events if e.detector == "class_coverage"]
    assert len(ev) == 1 and ev[0].action == "rollback" and ev[0].evidence["coverage"] <= 0.5
    assert ev[0].evidence["peak_coverage"] == 1.0 and "modes" in ev[0].message
    assert t.guard.rollbacks == 1 and t.method.lin.bias[0].abs() < 1  # the restored weights
    assert t.guard.diversity > 0.3  # as diverse as the data: only the coverage saw it


class DigitBank(Probe):
    """Samples real digit images from a bank; with its `collapsed` buffer set (part of the state a
    rollback restores) only the 3s, as a generator that lost nine digits of ten."""

    def __init__(self):
        super().__init__()
        self.info = DataInfo("probe", "image", (1, 8, 8))
        digits = load_dataset(DataConfig(name="digits", labels=True))
        self.bank, self.threes = digits.x, digits.x[digits.y == 3]
        self.register_buffer("collapsed", torch.zeros(()))

    def loss(self, batch, step):
        x = batch.x.flatten(1)[:, :2]
        return (self.lin(x) - x).pow(2).sum(1) + 1.0, {}

    def sample(self, n, *, generator=None, **kw):
        src = self.threes if self.collapsed > 0 else self.bank
        return src[torch.randint(len(src), (n,), generator=generator)]


def test_lost_digits_roll_back_on_the_classifiers_reading(tmp_path):
    """On digit images a sample's class is the digits classifier's reading: samples of every digit
    keep coverage at 1; samples of 3s alone keep a tenth of it, and the guard rolls back to the
    snapshot taken before (where the buffer says: not collapsed)."""
    t = probe_trainer(tmp_path, data="digits", method=DigitBank, coverage="rollback", collapse="warn",
                      collapse_after=0, patience=2, spike="warn", explosion="warn")
    t.fit(stop_at=60)
    assert t.guard.coverage.value == 1.0 and not [e for e in t.guard.events if e.detector == "class_coverage"]
    t.method.collapsed.fill_(1.0)
    t.fit(stop_at=100)
    ev = [e for e in t.guard.events if e.detector == "class_coverage"]
    assert len(ev) == 1 and ev[0].action == "rollback"
    assert ev[0].evidence["coverage"] == pytest.approx(0.1) and ev[0].evidence["peak_coverage"] == 1.0
    assert t.method.collapsed == 0 and t.guard.rollbacks == 1


def test_coverage_counts_only_after_it_was_reached_and_resets_on_rollback():
    g = StabilityGuard(GuardConfig(coverage="rollback", collapse_coverage=1.0, patience=2))
    for step, c in ((500, 0.5), (550, 0.75), (600, 0.75)):  # a generator still spreading out
        g.check_health(step, {}, None, c)
    assert g.events == [] and g.healthy()
    g.check_health(650, {}, None, 1.0)
    g.on_snapshot()
    g.check_health(700, {}, None, 0.875)
    assert g.events == [] and not g.healthy()  # one check short: no snapshot taken now
    g.check_health(750, {}, None, 0.875)
    assert [e.action for e in g.events] == ["rollback"] and g.take_verdict() is g.events[0]
    g.on_rollback()
    assert g.coverage.value == 1.0 and g.coverage.peak == 1.0 and g.healthy()
    state = g.state_dict()
    h = StabilityGuard(GuardConfig())
    h.load_state_dict(json.loads(json.dumps(state)))
    assert (h.coverage.value, h.coverage.peak, h.coverage.snapshot) == (1.0, 1.0, 1.0)


def test_a_lost_mode_is_warned_once_per_fall_by_default():
    """The default action is warn (a rollback to a state that was already starving the mode
    loses it again; docs/guide.md): one event per fall, none while it stays lost. A fall ends
    only once every mode has been back for `patience` checks in a row, so a mode that flickers
    in and out (a single check back, then lost again) is one fall, not one event per return."""
    g = StabilityGuard(GuardConfig(patience=2))
    assert g.cfg.coverage == "warn"
    coverage = (1.0, 0.875, 0.875, 0.875, 0.875,
                1.0, 0.875, 0.875,  # back for one check: the same fall
                1.0, 1.0, 0.875, 0.875)  # back for two: a new fall
    for step, c in enumerate(coverage):
        g.check_health(step * 50, {}, None, c)
    assert [(e.detector, e.action, e.step) for e in g.events] == [("class_coverage", "warn", 100),
                                                                 ("class_coverage", "warn", 550)]
    assert g.take_verdict() is None and g.healthy()  # a warning neither rolls back nor delays snapshots


class OnModes(Probe):
    """ring8 samples at the modes, `spread` (a buffer, so a rollback restores it) around them."""

    def __init__(self):
        super().__init__()
        self.register_buffer("spread", torch.tensor(0.005))

    def sample(self, n, *, generator=None, **kw):
        means = mixture_means("ring8")
        k = torch.randint(len(means), (n,), generator=generator)
        return means[k] + self.spread * torch.randn(n, 2, generator=generator)


def test_samples_drifting_off_the_modes_roll_back_on_quality(tmp_path):
    """A critic gone blind lets the samples drift off the modes while each mode keeps its
    nearest samples and the spread over the plane holds: neither diversity nor coverage sees it.
    The high-quality share (within 3 std = 0.03 of a mode) falls from ~100 % (spread 0.005) to
    ~4 % (spread 0.1: P(|N(0, 0.1^2 I)| <= 0.03) = 1 - exp(-0.045)), far under a quarter of its best,
    and the quality check rolls back to the snapshot that still had spread 0.005."""
    t = probe_trainer(tmp_path, data="ring8", method=OnModes, quality="rollback", collapse_after=0, patience=2,
                      spike="warn", explosion="warn")
    t.fit(stop_at=100)
    assert t.guard.quality.value > 0.99 and t.guard.events == []
    t.method.spread.fill_(0.1)
    t.fit(stop_at=140)
    ev = [e for e in t.guard.events if e.detector == "sample_quality"]
    assert len(ev) == 1 and ev[0].action == "rollback" and ev[0].evidence["hq"] < 0.1
    assert ev[0].evidence["peak_hq"] > 0.99 and "high quality" in ev[0].message
    assert [e.detector for e in t.guard.events] == ["sample_quality"]  # coverage and diversity held
    assert t.guard.rollbacks == 1 and float(t.method.spread) == pytest.approx(0.005)  # the restored state


def test_quality_is_judged_once_reached_and_warned_once_per_fall_by_default():
    g = StabilityGuard(GuardConfig(patience=2))
    assert (g.cfg.quality, g.cfg.quality_drop, g.cfg.quality_min) == ("warn", 0.25, 0.2)
    for step, q in enumerate((0.1, 0.02, 0.02, 0.02)):  # a generator still finding the modes
        g.check_health(step * 50, {}, None, 1.0, q)
    assert g.events == []
    for step, q in enumerate((0.6, 0.2, 0.1, 0.1, 0.1, 0.1, 0.7, 0.15, 0.15), start=4):
        g.check_health(step * 50, {}, None, 1.0, q)
    assert [(e.detector, e.action, e.step) for e in g.events] == [("sample_quality", "warn", 350),
                                                                 ("sample_quality", "warn", 600)]
    assert g.events[0].evidence == {"hq": 0.1, "peak_hq": 0.6} and g.events[1].evidence["peak_hq"] == 0.7
    for step, q in enumerate((0.2, 0.15, 0.15, 0.3, 0.15, 0.15), start=13):  # wavering under half of 0.7
        g.check_health(step * 50, {}, None, 1.0, q)
    assert len(g.events) == 2  # the same fall: it ends only back at half its best
    assert g.take_verdict() is None and g.healthy()  # a warning neither rolls back nor delays snapshots


def test_quality_rollback_resets_from_the_snapshot_and_survives_a_checkpoint():
    g = StabilityGuard(GuardConfig(quality="rollback", patience=2))
    g.check_health(500, {}, None, None, 0.8)
    g.on_snapshot()
    g.check_health(550, {}, None, None, 0.1)
    assert g.events == [] and not g.healthy()  # part-way to a verdict: no snapshot now
    g.check_health(600, {}, None, None, 0.1)
    assert [e.action for e in g.events] == ["rollback"] and g.take_verdict() is g.events[0]
    g.on_rollback()
    assert (g.quality.value, g.quality.peak, g.quality.low_checks) == (0.8, 0.8, 0) and g.healthy()
    h = StabilityGuard(GuardConfig())
    h.load_state_dict(json.loads(json.dumps(g.state_dict())))
    assert h.quality == g.quality and h.coverage == g.coverage


def test_checkpoints_from_before_the_quality_check_load():
    """Guard state written when coverage was kept in flat keys (and no quality was watched)."""
    state = StabilityGuard(GuardConfig()).state_dict()
    del state["coverage_fall"], state["quality_fall"]
    state.update({"coverage": 0.875, "peak_coverage": 1.0, "snapshot_coverage": 1.0,
                  "uncovered_checks": 1, "coverage_reported": False})
    g = StabilityGuard(GuardConfig())
    g.load_state_dict(state)
    assert (g.coverage.value, g.coverage.peak, g.coverage.snapshot, g.coverage.low_checks) == (0.875, 1.0, 1.0, 1)
    assert g.quality.value is None and g.quality.peak == 0.0


def test_posterior_collapse_hook(tmp_path):
    t = probe_trainer(tmp_path)
    t.method.fake_health["active_fraction"] = 0.0
    t.fit(stop_at=100)
    ev = [e for e in t.guard.events if e.detector == "posterior_collapse"]
    assert [(e.step, e.action) for e in ev] == [(30, "warn")]  # patience 3 checks, then once per fall


def test_posterior_collapse_on_a_vae_whose_kl_weight_crushes_the_latent(tmp_path):
    """beta 100 on vae-digits: the KL term wins and every latent unit falls silent (Bowman et al.
    2016); the recipe as it is (beta 1, KL annealing) keeps all 32 active and raises nothing."""
    import stablegen as sg

    quick = {"train.steps": 300, "train.progress": False, "train.sample_every": 0, "train.checkpoint_every": 0,
             "eval.metrics": []}
    crushed = sg.train("vae-digits", {**quick, "model.beta": 100.0, "model.anneal": "none"}, run_dir=tmp_path / "b")
    ev = [json.loads(line) for line in (tmp_path / "b" / "events.jsonl").read_text().splitlines()]
    assert [(e["detector"], e["step"], e["action"]) for e in ev] == [("posterior_collapse", 150, "warn")]
    assert crushed.method.health()["active_fraction"] == 0.0
    sg.train("vae-digits", quick, run_dir=tmp_path / "ok")
    assert (tmp_path / "ok" / "events.jsonl").read_text() == ""


# ---- torture: recipes made unstable on purpose ---------------------------------------------
# Each case runs a plain loop (as tutorials write it: no checks) and stablegen on the same
# start. A run repeats exactly on one machine (fixed seeds, deterministic kernels), but another
# CPU, vector width or thread count rounds differently and a GAN amplifies that over hundreds of
# steps. So the short cases assert what their construction fixes, and the long ones (x30, no
# normalization) assert outcomes, with bounds measured over training seeds 0-14 at
# OMP_NUM_THREADS 1 and 2 with AVX-512 and AVX2 kernels; each comment says the margin.
def _gan(tmp_path, overrides, recipe="gan-ring8"):
    recipe = load_recipe(recipe, {"train.progress": False, "train.sample_every": 0, "train.checkpoint_every": 0,
                                  "model.width": 32, "data.batch_size": 64, "data.n": 2048, **overrides})
    seed_everything(0, True)
    data = load_dataset(recipe.data)
    return recipe, data, build_method(recipe, data)


def _plain_loop(method, data, steps, lr, poison=(), poison_value=float("nan"), fp16=False):
    """The loop as tutorials write it: Adam, no checks, optionally under fp16 autocast."""
    opts = {p.name: torch.optim.Adam(p.params, lr=lr, betas=(0.5, 0.999)) for p in method.phases()}
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        for phase in method.phases():
            x = data.x[torch.randint(len(data.x), (64,), generator=g)]
            if step in poison:
                x = x.clone()
                x[0] = poison_value
            with torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
                loss, _ = phase.loss(Batch(x), step)
            opts[phase.name].zero_grad()
            loss.float().mean().backward()
            opts[phase.name].step()
    return method


def _finite(method):
    return all(torch.isfinite(p).all() for p in method.parameters())


def _modes(method, data="ring8", scale=1.0):
    """(modes, hq) of 2,500 raw samples, in units of the benchmark's mixture."""
    from stablegen.metrics.mixtures import mixture_metrics

    with torch.no_grad():
        x = method.sample(2500, generator=torch.Generator().manual_seed(0), truncate=False).float() / scale
    m = mixture_metrics(x, data)
    return m["modes"], m["hq"]


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_torture_poisoned_batch(tmp_path, poison):
    recipe, data, method = _gan(tmp_path, {"train.steps": 60})
    plain = _plain_loop(copy.deepcopy(method), data, 60, 2e-4, poison={30}, poison_value=poison)
    assert not _finite(plain)  # the plain loop is dead

    t = Trainer(method, data, recipe, tmp_path)
    nxt = t.loader.next
    calls = {"n": 0}

    def poisoned():
        b = nxt()
        calls["n"] += 1
        if calls["n"] in (61, 62):  # inside step 30: the d and g batches
            b = Batch(b.x.clone().index_fill_(0, torch.tensor([0]), poison), b.y)
        return b

    t.loader.next = poisoned
    assert t.fit() == "finished"
    assert _finite(method)
    assert any(e.detector == "nonfinite" and e.step == 30 for e in t.guard.events)


def test_torture_huge_initial_weight(tmp_path):
    """A critic weight x 1e37: every forward overflows, so no update can be made. The plain loop
    writes NaN into its weights at the first step; stablegen applies none of them, rolls back
    until its budget is spent and stops with a diagnosis (exit code 3 from the CLI)."""
    recipe, data, method = _gan(tmp_path, {"train.steps": 80, "guard.max_skips": 3, "guard.max_rollbacks": 2})
    with torch.no_grad():
        first = next(m for m in method.D.modules() if isinstance(m, torch.nn.Linear))
        first.weight.mul_(1e37)  # activations overflow float32
    plain = _plain_loop(copy.deepcopy(method), data, 1, 2e-4)
    assert not _finite(plain)
    t = Trainer(method, data, recipe, tmp_path)
    start = copy.deepcopy(method.D.state_dict())
    assert t.fit() == "stopped"
    assert all(torch.equal(v, start[k]) for k, v in method.D.state_dict().items())  # no update reached D
    assert _finite(method)
    # the generator's updates go through; the critic's skips are counted on their own
    actions = [e.action for e in t.guard.events if e.detector == "nonfinite"]
    assert actions == ["skip", "skip", "rollback"] * 2 + ["skip", "skip", "stop"]
    assert "no update of phase 'd' has been applied since the start" in t.message
    assert "budget of 2 spent" in t.message


def test_torture_fp16_without_loss_scaling(tmp_path):
    """fp16 with the GradScaler off and critic outputs beyond fp16's 65504: the plain loop under
    autocast dies at once; stablegen keeps finite weights and stops with a diagnosis that names
    the remedy."""
    recipe, data, method = _gan(tmp_path, {"train.steps": 40, "train.precision": "fp16", "train.grad_scaler": False,
                                           "guard.max_skips": 3, "guard.max_rollbacks": 1})
    with torch.no_grad():
        for m in method.D.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(100.0)
    plain = _plain_loop(copy.deepcopy(method), data, 2, 2e-4, fp16=True)
    assert not _finite(plain)
    t = Trainer(method, data, recipe, tmp_path)
    assert t.fit() == "stopped"
    assert _finite(method)
    assert {e.detector for e in t.guard.events} == {"nonfinite"}
    assert "train.grad_scaler=true or train.precision=bf16" in t.message


def test_fp16_minibatch_stddev_trains_without_loss_scaling(tmp_path):
    """Minibatch stddev computes its statistic in float32: in half precision its 1e-8 floor was 0
    and sqrt's gradient at 0 inf, which made every fp16 step of gan-ring8 non-finite."""
    recipe, data, method = _gan(tmp_path, {"train.steps": 100, "train.precision": "fp16", "train.grad_scaler": False})
    t = Trainer(method, data, recipe, tmp_path)
    assert t.fit() == "finished" and _finite(method)
    assert not [e for e in t.guard.events if e.detector == "nonfinite"]


def test_torture_learning_rate_x30(tmp_path):
    """gan-ring8 at 30x its learning rates. The plain loop collapses; with the guard, spikes of the
    loss or the gradient norm roll back and halve the rates until training holds. Stablegen's
    trainer without the guard collapses on some seeds and not on others, so the guard is held
    to lose nothing against it. The guard's window and warm-up are scaled to this 1,000-step run
    (20 steps, from step 0)."""
    lr = {"optim.d.lr": 30 * 2e-3, "optim.g.lr": 30 * 1e-3}
    over = {"train.steps": 1000, "guard.window": 20, "guard.spike_after": 0, **lr}
    recipe, data, method = _gan(tmp_path, over)
    plain = _plain_loop(copy.deepcopy(method), data, 1000, 6e-2)
    unguarded_recipe, _, unguarded = _gan(tmp_path, {**over, "guard.enabled": False})
    Trainer(unguarded, data, unguarded_recipe, tmp_path / "off").fit()
    t = Trainer(method, data, recipe, tmp_path / "on")
    assert t.fit() == "finished" and _finite(method)
    # which detector fires (loss_spike, grad_explosion) and when depends on the rounding; the
    # rollbacks carried out are those with a destination (of two asked at one step, one is)
    done = [e for e in t.guard.events if "to_step" in e.evidence]
    assert done and t.guard.lr_scale < 1 and "rolled back to step" in done[-1].message
    (plain_modes, plain_hq), (off_modes, _), (on_modes, on_hq) = map(_modes, (plain, unguarded, method))
    # measured over 21 runs: plain loop 0-1 modes, <= 0.1 % HQ; guarded 6-8 modes, 2.3-46 % HQ;
    # unguarded 0-7 modes, never more than the guarded run. Bounds: a mode, or 2x the HQ, beyond these.
    assert plain_modes <= 2 and plain_hq < 0.005
    assert on_modes >= 5 and on_hq > 0.01
    assert on_modes >= off_modes - 1


def test_torture_no_normalization(tmp_path):
    """ring8 in raw units (x 100) and no standardization: the critic separates real from fake at
    the first check and the generator rarely spreads out. The plain loop collapses; stablegen
    ends with finite weights and says why, naming the remedy, which works. The saturation
    window is one check (50 steps): at step 50 the fakes still sit near the origin, 100x inside
    the ring, and every raw-unit run measured read 100 % critic accuracy there (the standardized
    runs 62-93 %, under the 99 % threshold); later checks swing as the critic's huge inputs
    shake it, so a 200-step window saw the run saturated throughout on 3 runs of 12."""
    x = load_dataset(load_recipe("gan-ring8", {"data.n": 2048}).data).x * 100  # (2048, 2)
    np.save(tmp_path / "raw.npy", x.numpy())
    raw = {"train.steps": 1500, "data.name": "npy", "data.path": str(tmp_path / "raw.npy"),
           "guard.saturation_steps": 50}
    recipe, data, method = _gan(tmp_path, raw)
    plain = _plain_loop(copy.deepcopy(method), data, 1500, 2e-4)
    t = Trainer(method, data, recipe, tmp_path / "raw")
    # rolling back over and over, some runs spend gan-ring8's budget of 8 and stop with a diagnosis
    assert t.fit() in ("finished", "stopped") and _finite(method)
    said = next(e for e in t.guard.events if e.detector == "d_saturation")
    assert (said.step, said.action) == (50, "warn") and "model.standardize" in said.message
    fixed_recipe, _, fixed = _gan(tmp_path, {**raw, "model.standardize": True})
    standardized = Trainer(fixed, data, fixed_recipe, tmp_path / "standardized")
    assert standardized.fit() == "finished"
    assert not [e for e in standardized.guard.events if e.detector == "d_saturation"]
    (plain_modes, _), (_, raw_hq), (fixed_modes, fixed_hq) = (_modes(m, scale=100.0) for m in (plain, method, fixed))
    # measured over 21 runs: plain loop 0-2 modes; raw units 0-1 modes (4-5 on one seed, spread
    # off the modes), <= 6.7 % HQ; standardized 7-8 modes (6 on a 2-core AMD EPYC), 16-36 % HQ.
    # Bounds: a mode beyond these, and 10 % HQ between raw (1.5x under it) and standardized (1.6x over).
    assert plain_modes <= 3 and fixed_modes >= 5 and raw_hq < 0.1 < fixed_hq
