"""Lookahead / Lookahead-minmax (train/lookahead.py): the slow-weight update of Zhang et al. (2019)
by hand, its effect on a bilinear min-max game (Chavdarova et al. 2021), and the recipe switch."""

import json

import pytest
import torch
from safetensors.torch import load_file

import stablegen as sg
from stablegen.train.lookahead import lookahead_step

from games import bilinear_game


def test_slow_weights_follow_the_paper_update():
    """SGD on f(w) = w^2 / 2 (w <- (1 - lr) w), k = 3, alpha = 0.5, by hand."""
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    fast = []
    for _ in range(7):
        opt.zero_grad()
        (w ** 2 / 2).sum().backward()
        opt.step()
        lookahead_step(opt, k=3, alpha=0.5)
        fast.append(float(w.detach()))
    # slow starts at the weights after step 1 (0.9); steps 2-4 go 0.81, 0.729, 0.6561 and the
    # sync after step 4 sets w = 0.9 + 0.5 * (0.6561 - 0.9) = 0.77805
    assert fast[:3] == pytest.approx([0.9, 0.81, 0.729])
    assert fast[3] == pytest.approx(0.77805)
    assert fast[6] == pytest.approx(0.77805 + 0.5 * (0.77805 * 0.9 ** 3 - 0.77805))


def test_lookahead_minmax_damps_a_bilinear_game():
    """min_x max_y x*y: simultaneous gradient steps spiral outward, Lookahead on both players
    contracts toward the equilibrium (0, 0)."""
    assert bilinear_game() > 100  # spirals outward
    assert bilinear_game(lambda opt, p, before: lookahead_step(opt, 5, 0.5)) < 0.1


def test_recipe_switch_keeps_slow_weights_in_the_optimizer_state(tmp_path):
    run = sg.train("gan-ring8", {"train.steps": 12, "train.progress": False, "train.sample_every": 0,
                                 "train.threads": 1, "optim.d.lookahead": 5, "optim.g.lookahead": 5,
                                 "train.checkpoint_every": 0}, run_dir=tmp_path / "r")
    assert run.status == "finished"
    newest = sorted((tmp_path / "r" / "checkpoints").glob("*.safetensors"))[-1]
    slow = [k for k in load_file(str(newest)) if k.endswith("lookahead_slow")]
    meta = json.loads(newest.with_suffix(".json").read_text())
    counts = {entry["lookahead_count"] for entry in _optimizer_entries(meta)}
    assert slow and counts == {11}  # 12 steps: the first starts the slow copy, 11 counted since
    with pytest.raises(sg.RecipeError, match="lookahead_alpha"):
        sg.train("gan-ring8", {"train.steps": 1, "optim.g.lookahead_alpha": 1.5}, run_dir=tmp_path / "bad")


def _optimizer_entries(meta):
    """Per-parameter plain (non-tensor) optimizer state entries anywhere in a checkpoint's JSON."""
    if isinstance(meta, dict):
        if "lookahead_count" in meta:
            yield meta
        for value in meta.values():
            yield from _optimizer_entries(value)
    elif isinstance(meta, list):
        for value in meta:
            yield from _optimizer_entries(value)
