"""Optimistic updates (train/optimism.py): the step of Daskalakis et al. (2018) by hand, its effect
on a bilinear min-max game, a skipped step, and the recipe switch."""

import json

import pytest
import torch
from safetensors.torch import load_file

import stablegen as sg
from stablegen.train.optimism import optimistic_step, params_before_step

from games import bilinear_game


def _sgd_run(steps: int) -> list[float]:
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (w ** 2 / 2).sum().backward()
        before = params_before_step([w])
        opt.step()
        optimistic_step(opt, [w], before)
        out.append(float(w.detach()))
    return out


def test_step_follows_the_paper_update():
    """SGD on f(w) = w^2 / 2, lr 0.1: u_t = 0.1 w_t, w_{t+1} = w_t - 2 u_t + u_{t-1} from step 2."""
    # step 1: plain, w = 0.9 (u = 0.1); step 2: u = 0.09, w = 0.9 - 0.18 + 0.1 = 0.82;
    # step 3: u = 0.082, w = 0.82 - 0.164 + 0.09 = 0.746
    assert _sgd_run(3) == pytest.approx([0.9, 0.82, 0.746])


def test_optimism_converges_on_a_bilinear_game():
    """min_x max_y x*y: simultaneous gradient steps spiral outward; optimistic steps converge to
    the equilibrium (0, 0), contracting by about 1 - lr^2 / 2 per step (~0.01 after 1,000)."""
    assert bilinear_game() > 100
    assert bilinear_game(lambda opt, p, before: optimistic_step(opt, [p], [before])) < 0.05


def test_a_skipped_step_moves_nothing_and_keeps_the_last_update():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    w.grad = torch.tensor([1.0])
    before = params_before_step([w])
    opt.step()
    optimistic_step(opt, [w], before)  # u_1 = 0.1
    before = params_before_step([w])  # a GradScaler's skipped step: the weights stay
    optimistic_step(opt, [w], before, may_skip=True)
    assert float(w.detach()) == pytest.approx(0.9)
    assert float(opt.state[w]["optimism_prev"]) == pytest.approx(0.1)


def test_a_skipped_first_step_is_no_update_to_correct():
    """A GradScaler may skip the very first step: the next real step must then be plain."""
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    w.grad = torch.tensor([1.0])
    optimistic_step(opt, [w], params_before_step([w]), may_skip=True)  # skipped: no opt.step()
    before = params_before_step([w])
    opt.step()
    optimistic_step(opt, [w], before, may_skip=True)
    assert float(w.detach()) == pytest.approx(0.9)  # plain (u = 0.1), not 2u - 0 = 0.8


def test_a_parameter_new_to_the_step_does_not_reset_the_others():
    """A parameter that gets its first gradient mid-run takes a plain step; the others stay optimistic."""
    a, b = torch.nn.Parameter(torch.tensor([1.0])), torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([a, b], lr=0.1)
    a.grad = torch.tensor([1.0])
    before = params_before_step([a, b])  # b has no gradient yet
    opt.step()
    optimistic_step(opt, [a, b], before)  # a: plain, u = 0.1
    b.grad = torch.tensor([1.0])
    a.grad = torch.tensor([2.0])
    before = params_before_step([a, b])
    opt.step()
    optimistic_step(opt, [a, b], before)
    assert float(a.detach()) == pytest.approx(0.9 - 2 * 0.2 + 0.1)  # optimistic: 2 u_2 - u_1
    assert float(b.detach()) == pytest.approx(0.9)  # its first step: plain


def test_recipe_switch_keeps_the_last_update_in_the_optimizer_state(tmp_path):
    run = sg.train("gan-ring8", {"train.steps": 6, "train.progress": False, "train.sample_every": 0,
                                 "train.threads": 1, "optim.d.optimism": True, "optim.g.optimism": False, "optim.d.lookahead": 0,
                                 "optim.g.lookahead": 0, "train.checkpoint_every": 0}, run_dir=tmp_path / "r")
    assert run.status == "finished"
    newest = sorted((tmp_path / "r" / "checkpoints").glob("*.safetensors"))[-1]
    keys = list(load_file(str(newest)))
    prev = [k for k in keys if k.endswith("optimism_prev")]
    n_critic = sum(1 for _ in run.method.D.parameters())
    assert len(prev) == n_critic  # the critic's optimizer only
    assert json.loads(newest.with_suffix(".json").read_text())["step"] == 6
    with pytest.raises(sg.RecipeError, match="optimism"):
        sg.train("gan-ring8", {"train.steps": 1, "optim.g.optimism": "maybe"}, run_dir=tmp_path / "bad")
