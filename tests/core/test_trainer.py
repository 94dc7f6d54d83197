import json
import math

import pytest
import torch
from safetensors.torch import load_file

import stablegen as sg
from stablegen.train.checkpoint import CheckpointError
from stablegen.train.ema import EMA


def tiny(recipe_overrides: dict | None = None) -> dict:
    """Overrides that make any recipe a few-second run."""
    base = {"train.progress": False, "train.sample_every": 0, "train.log_every": 10, "train.threads": 1}
    base.update(recipe_overrides or {})
    return base


def _weights(run_dir):
    path = sorted((run_dir / "checkpoints").glob("*.safetensors"))[-1]
    return {k: v for k, v in load_file(str(path)).items() if k.startswith(("model.", "ema.", "optim."))}


def test_resume_is_bitwise_exact(tmp_path):
    """200 steps == 100 steps, interrupted, resumed, 100 more (CPU, deterministic)."""
    ov = tiny({"train.steps": 200, "train.ema": 0.9, "model.width": 16, "data.batch_size": 32,
               "train.checkpoint_every": 0, "optim.d.schedule": "cosine", "optim.g.warmup": 30,
               "optim.g.lookahead": 7,  # 100 is no multiple of 7: Lookahead's count must travel too
               "optim.d.optimism": True})  # and the optimistic step's last update
    sg.train("gan-ring8", ov, run_dir=tmp_path / "full")
    part = sg.train("gan-ring8", ov, run_dir=tmp_path / "split", stop_at=100)
    assert part.status == "interrupted"
    sg.train(None, {"train.progress": False}, run_dir=tmp_path / "split", resume=True)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(100) == 1  # the log continues without duplicates


def test_run_directory_layout_and_sampling(tmp_path):
    run = sg.train("gan-ring8", tiny({"train.steps": 20, "train.ema": 0.5}), run_dir=tmp_path / "r")
    for name in ("recipe.yaml", "metrics.jsonl", "events.jsonl", "summary.json", "samples/final.png"):
        assert (tmp_path / "r" / name).is_file(), name
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "finished"
    x = run.sample(50, seed=3)
    assert x.shape == (50, 2) and torch.equal(x, run.sample(50, seed=3))
    assert not torch.equal(run.sample(50, ema=False, seed=3), x)  # EMA weights differ from raw ones
    loaded = sg.open_run(tmp_path / "r")
    assert torch.equal(loaded.sample(50, seed=3), x)


def test_refuses_to_overwrite_a_run(tmp_path):
    sg.train("gan-ring8", tiny({"train.steps": 2}), run_dir=tmp_path / "r")
    with pytest.raises(sg.RecipeError, match="already holds a run"):
        sg.train("gan-ring8", tiny({"train.steps": 2}), run_dir=tmp_path / "r")


def test_ema_equals_hand_computed_average():
    p = torch.nn.Parameter(torch.tensor([0.0]))
    ema = EMA({"p": p}, decay=0.9, start=2, warmup=False)
    expected, values = 0.0, [1.0, 2.0, 3.0, 4.0, 5.0]
    for step, v in enumerate(values):
        p.data.fill_(v)
        ema.update(step)
        expected = v if step < 2 else 0.9 * expected + 0.1 * v
    assert ema.shadow[0].item() == pytest.approx(expected)
    with ema.swapped():
        assert p.item() == pytest.approx(expected)
    assert p.item() == 5.0


def test_ema_warmup_ramps_the_decay_from_the_start_step():
    ema = EMA({"p": torch.nn.Parameter(torch.zeros(1))}, decay=0.999, start=5)
    assert [ema.decay_at(s) for s in (0, 4)] == [0.0, 0.0]  # before start: a copy
    assert ema.decay_at(5) == pytest.approx(1 / 10) and ema.decay_at(105) == pytest.approx(101 / 110)
    assert ema.decay_at(10**6) == 0.999  # capped at the recipe's decay


def test_ema_averages_batchnorm_statistics_and_is_keyed_by_name():
    """The running statistics of BatchNorm are averaged like the weights; counters copied."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA({**dict(net.named_parameters()), **dict(net.named_buffers())}, decay=0.5, warmup=False)
    before = net[1].running_mean.clone()
    net.train()
    net(torch.randn(64, 3) + 5.0)  # moves running_mean and num_batches_tracked
    ema.update(0)
    state = ema.state_dict()
    assert set(state) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                          "1.num_batches_tracked"}
    assert torch.allclose(state["1.running_mean"], 0.5 * before + 0.5 * net[1].running_mean)
    assert state["1.num_batches_tracked"].item() == 1
    with ema.swapped():
        assert torch.equal(net[1].running_mean, state["1.running_mean"])
    assert not torch.equal(net[1].running_mean, state["1.running_mean"])


def test_ema_loads_the_positional_keys_of_older_checkpoints():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = EMA({**dict(net.named_parameters()), **dict(net.named_buffers())}, decay=0.9)
    old = {str(i): torch.full_like(p, float(i)) for i, p in enumerate(net.parameters())}
    ema.load_state_dict(old)
    assert torch.equal(ema.state_dict()["1.bias"], torch.full((2,), 3.0))
    assert torch.equal(ema.state_dict()["1.running_var"], net[1].running_var)  # buffers: the live ones
    with pytest.raises(ValueError, match="does not fit"):
        ema.load_state_dict({"nope": torch.zeros(1)})


def test_corrupt_and_missing_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a run directory"):
        sg.open_run(tmp_path)
    sg.train("gan-ring8", tiny({"train.steps": 3}), run_dir=tmp_path / "r")
    ckpt = sorted((tmp_path / "r" / "checkpoints").glob("*.safetensors"))[-1]
    ckpt.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=f"{ckpt.name} is corrupt"):
        sg.open_run(tmp_path / "r")
    ckpt.unlink()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        sg.open_run(tmp_path / "r")


def test_lr_warmup_and_cosine_schedule(tmp_path):
    run = sg.train("gan-ring8", tiny({"train.steps": 100, "optim.g.warmup": 10, "optim.g.schedule": "cosine",
                                      "optim.g.min_lr": 0.1, "optim.g.lr": 1e-3, "train.log_every": 5}),
                   run_dir=tmp_path / "r")
    lrs = {r["step"]: r["lr/g"] for r in map(json.loads, (run.run_dir / "metrics.jsonl").read_text().splitlines())
           if "lr/g" in r}
    assert lrs[5] == pytest.approx(1e-3 * 6 / 10)  # warmup: (step + 1) / warmup after 5 scheduler steps
    assert lrs[100] == pytest.approx(1e-4, rel=1e-3)  # cosine floor: min_lr * lr
    assert lrs[55] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90))), rel=1e-3)


def test_wsd_schedule_is_constant_then_cools_down(tmp_path):
    run = sg.train("gan-ring8", tiny({"train.steps": 100, "optim.g.schedule": "wsd", "optim.g.decay_fraction": 0.3,
                                      "optim.g.lr": 1e-3, "train.log_every": 5}), run_dir=tmp_path / "r")
    lrs = {r["step"]: r["lr/g"] for r in map(json.loads, (run.run_dir / "metrics.jsonl").read_text().splitlines())
           if "lr/g" in r}
    assert lrs[5] == lrs[70] == 1e-3  # stable for the first 70 % of the steps
    assert lrs[85] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 15 / 30)), rel=1e-6)  # cosine cooldown
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)


def test_ttur_gives_each_phase_its_own_learning_rate(tmp_path):
    run = sg.train("gan-ring8", tiny({"train.steps": 10, "optim.d.lr": 4e-4, "optim.g.lr": 1e-4,
                                              "optim.d.schedule": "constant", "optim.g.schedule": "constant"}),
                   run_dir=tmp_path / "r")
    last = [r for r in map(json.loads, (run.run_dir / "metrics.jsonl").read_text().splitlines()) if "lr/d" in r][-1]
    assert last["lr/d"] == 4e-4 and last["lr/g"] == 1e-4


def test_missing_optim_section_for_a_phase(tmp_path):
    with pytest.raises(sg.RecipeError, match="no optim.g section"):
        sg.train({"model": {"family": "gan"}, "data": {"name": "moons"}, "optim": {"d": {}}},
                 tiny({"train.steps": 1}), run_dir=tmp_path / "r")


def test_fp16_and_bf16_runs_stay_finite(tmp_path):
    for precision in ("bf16", "fp16"):
        run = sg.train("gan-ring8", tiny({"train.steps": 30, "train.precision": precision}),
                       run_dir=tmp_path / precision)
        assert all(torch.isfinite(p).all() for p in run.method.parameters())


def test_compile_switch(tmp_path):
    with pytest.raises(sg.RecipeError, match="double backward"):
        sg.train("gan-ring8", tiny({"train.steps": 1, "train.compile": True, "model.r1_weight": 0.1}),
                 run_dir=tmp_path / "a")
    run = sg.train("gan-ring8", tiny({"train.steps": 3, "train.compile": True, "model.r1_weight": 0}),
                   run_dir=tmp_path / "b")
    assert run.status == "finished" and "G.net.net.0.weight" in run.method.state_dict()  # names unchanged


@pytest.mark.parametrize("compile", [False, True])
def test_seed_everything_turns_on_deterministic_algorithms(compile):
    """train.deterministic sets the ATen flag (warn-only) with or without train.compile; only
    with compile does it also set inductor's flag (the only path that imports inductor)."""
    from stablegen.api import seed_everything

    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        seed_everything(0, True, compile=compile)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        if compile:
            import torch._inductor.config as inductor_config
            assert inductor_config.deterministic
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@pytest.mark.parametrize("name", ["adam", "adamw", "nadam", "sgd", "rmsprop"])
def test_optimizers_take_the_multi_tensor_update(name):
    """Every optimizer runs torch's foreach update (torch picks it by itself on CUDA only). For
    Adam, AdamW, SGD and RMSprop it is the per-parameter update to the bit; torch's foreach
    NAdam orders its arithmetic differently, within float32 rounding (a few ulp after 20 steps)."""
    from stablegen.recipe import OptimConfig
    from stablegen.train.loop import make_optimizer

    torch.manual_seed(0)
    shapes = [(8, 2), (8,), (1, 9)]
    fast = [torch.randn(s, requires_grad=True) for s in shapes]
    slow = [p.detach().clone().requires_grad_(True) for p in fast]
    cfg = OptimConfig(name=name, lr=1e-2, momentum=0.9 if name in ("sgd", "rmsprop") else 0.0)
    opt = make_optimizer(fast, cfg)
    assert opt.defaults["foreach"] is True
    ref = make_optimizer(slow, cfg)
    ref.param_groups[0]["foreach"] = False  # read at each step: the per-parameter loop
    for _ in range(20):
        grads = [torch.randn(s) for s in shapes]
        for params, o in ((fast, opt), (slow, ref)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            o.step()
    for a, b in zip(fast, slow):
        if name == "nadam":
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        else:
            assert torch.equal(a, b)


def test_a_parametrized_critic_is_computed_once_per_phase(tmp_path):
    """gan-grid25's weight-normalized critic scores real and fake data (and R1 differentiates
    through it) in the critic phase, and the fakes in the generator phase: with the trainer's
    parametrization cache its weights are computed once per phase, twice a step, where they
    were computed at every use (three times a step) before."""
    from stablegen.api import build_method, seed_everything
    from stablegen.data import load_dataset
    from stablegen.recipe import load_recipe
    from stablegen.train.loop import Trainer

    recipe = load_recipe("gan-grid25", tiny({"train.steps": 8, "train.checkpoint_every": 0,
                                             "model.width": 16, "data.batch_size": 32, "guard.enabled": False}))
    seed_everything(0, True)
    data = load_dataset(recipe.data)
    method = build_method(recipe, data)
    calls = []
    method.D.body[0].parametrizations.weight[0].register_forward_hook(lambda *a: calls.append(1))
    Trainer(method, data, recipe, tmp_path / "r").fit()
    assert len(calls) == 2 * 8


@pytest.mark.parametrize("augment", ["diffaugment", "ada"])
def test_augmentation_switches_reach_the_critic_through_the_trainer(tmp_path, monkeypatch, augment):
    """model.augment: every image the critic sees in training is augmented, reals and fakes in
    both phases (Zhao et al. 2020, sec. 3.2; Karras et al. 2020), and the generator's fakes keep
    their gradient through it."""
    import stablegen.methods.gan as gan_module

    seen = []

    def spy(x, policy, p=1.0):
        seen.append((x.requires_grad, float(p)))
        return gan_module.__dict__["_real_diff_augment"](x, policy, p=p)

    monkeypatch.setitem(gan_module.__dict__, "_real_diff_augment", gan_module.diff_augment)
    monkeypatch.setattr(gan_module, "diff_augment", spy)
    over = tiny({"train.steps": 8, "model.width": 8, "data.batch_size": 16, "model.augment": augment,
                 "model.ada_interval": 1, "model.ada_speed": 64, "model.ada_target": 0.01, "train.log_every": 4})
    run = sg.train("dcgan-digits", over, run_dir=tmp_path / augment)
    assert len(seen) == 3 * 8  # D: real and fake; G: fake
    assert [g for g, _ in seen] == [False, False, True] * 8  # only the G phase's fakes carry a gradient
    if augment == "ada":  # p starts at 0 and is steered by r_t; the critic's health reports both
        assert seen[0][1] == 0.0 and run.method.ada_p.item() > 0
        logged = [json.loads(line) for line in (tmp_path / augment / "metrics.jsonl").read_text().splitlines()]
        assert logged[0]["step"] == 4 and "health/ada_p" in logged[0] and "health/ada_rt" in logged[0]


def test_a_short_dcgan_run_samples_no_worse_with_its_ema(tmp_path):
    """dcgan-digits for 100 steps (decay 0.999): the warmed-up EMA with averaged BatchNorm
    statistics samples about as well as the raw generator, where the EMA without warm-up
    still sits near the initial weights. Measured (digits-feature FID, 1,000 samples, seeds
    0 / 1 / 2): EMA 30.8 / 38.2 / 35.6, raw 34.8 / 49.0 / 31.7; the EMA without warm-up 85.0
    (seed 2), and before BatchNorm statistics were averaged, image EMAs sampled grey noise. The
    bound leaves 25 % for FID's sampling noise at n=1,000 and machine-to-machine drift."""
    over = {"train.steps": 100, "train.progress": False, "train.sample_every": 0, "train.checkpoint_every": 0,
            "eval.metrics": []}
    run = sg.train("dcgan-digits", over, run_dir=tmp_path / "warm", report=False)
    ema, raw = (run.evaluate(["fid"], ema=e, n=1000)["fid"] for e in (True, False))
    assert ema <= 1.25 * raw


def test_a_spike_between_two_log_lines_is_logged_as_the_max_since_the_last_line(tmp_path):
    from stablegen.api import build_method
    from stablegen.data import load_dataset
    from stablegen.recipe import load_recipe
    from stablegen.train.loop import Trainer

    recipe = load_recipe("vae-digits", tiny({"train.steps": 20, "guard.enabled": False, "eval.metrics": []}))
    data = load_dataset(recipe.data)
    method = build_method(recipe, data)
    phase = method.phases()[0]
    plain = phase.loss

    def spiky(batch, step):  # step 13 alone: between the lines of steps 10 and 20
        loss, logs = plain(batch, step)
        return (loss * 1000 if step == 13 else loss), logs

    phase.loss = spiky
    method.phases = lambda: [phase]
    Trainer(method, data, recipe, tmp_path).fit()
    lines = {r["step"]: r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())}
    assert lines[20]["loss/main.max"] > 100 * lines[20]["loss/main"]  # the spike shows in its line
    assert lines[10]["loss/main.max"] < 10 * lines[10]["loss/main"]  # and only there
