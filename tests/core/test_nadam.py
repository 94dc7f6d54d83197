"""optim.*.name: nadam (Dozat 2016, Adam with Nesterov momentum): Adam itself without momentum,
a slower outward spiral than Adam's with it, and the recipe switch."""

import functools

import pytest
import torch
from safetensors.torch import load_file

import stablegen as sg

from games import bilinear_game


def test_without_momentum_nadam_is_adam():
    adam = functools.partial(torch.optim.Adam, betas=(0.0, 0.999))
    nadam = functools.partial(torch.optim.NAdam, betas=(0.0, 0.999))
    # the same steps, computed in another order: equal up to float rounding (1e-6 here)
    assert bilinear_game(steps=300, lr=0.05, optimizer=nadam) == pytest.approx(
        bilinear_game(steps=300, lr=0.05, optimizer=adam), rel=1e-5)


def test_nesterov_momentum_spirals_out_slower_on_a_bilinear_game():
    """min_x max_y x*y at beta1 0.9, lr 0.05, 2,000 steps: Adam's momentum lags the rotation and
    the players drift out to |(x, y)| ~ 13.3; NAdam's look-ahead step to ~ 10.0 (deterministic;
    the bound 0.85 leaves room for other float rounding)."""
    adam = functools.partial(torch.optim.Adam, betas=(0.9, 0.999))
    nadam = functools.partial(torch.optim.NAdam, betas=(0.9, 0.999))
    plain = bilinear_game(steps=2000, lr=0.05, optimizer=adam)
    assert plain > 5
    assert bilinear_game(steps=2000, lr=0.05, optimizer=nadam) < 0.85 * plain


def test_recipe_switch_builds_nadam(tmp_path):
    run = sg.train("gan-grid25", {"train.steps": 3, "train.progress": False, "train.sample_every": 0,
                                  "train.checkpoint_every": 0, "train.threads": 1, "optim.d.name": "nadam",
                                  "optim.g.name": "adam", "model.width": 16}, run_dir=tmp_path / "r")
    newest = sorted((tmp_path / "r" / "checkpoints").glob("*.safetensors"))[-1]
    mu = [k for k in load_file(str(newest)) if k.endswith("mu_product")]  # NAdam's own state
    assert run.status == "finished" and len(mu) == sum(1 for _ in run.method.D.parameters())
    with pytest.raises(sg.RecipeError, match="nadam"):
        sg.train("gan-grid25", {"train.steps": 1, "optim.g.name": "nadm"}, run_dir=tmp_path / "bad")
