"""Held-out evaluation: which split eval.split picks for every kind of data, what load_eval_data
loads, and that a run's eval.json (trainer and `stablegen eval`) measures the held-out split."""

import json

import numpy as np
import pytest
import torch

import stablegen as sg
from stablegen.cli import main
from stablegen.data import DataError, EvalSplit, load_dataset, load_eval_data, resolve_eval_split
from stablegen.recipe import DataConfig


@pytest.mark.parametrize("data, split, expected", [
    ({"name": "digits", "split": "train"}, "auto", EvalSplit("test", True)),
    ({"name": "digits", "split": "train"}, "val", EvalSplit("val", True)),
    ({"name": "digits", "split": "train"}, "train", EvalSplit("train", False)),
    ({"name": "digits"}, "auto", EvalSplit("all", False)),  # trained on every image: nothing is held out
    ({"name": "digits"}, "test", EvalSplit("test", False)),
    ({"name": "digits", "split": "test"}, "auto", EvalSplit("test", False)),
    ({"name": "fashion-mnist"}, "auto", EvalSplit("test", True)),  # all = the 60,000 training images
    ({"name": "fashion-mnist"}, "val", EvalSplit("val", False)),
    ({"name": "fashion-mnist", "split": "train"}, "val", EvalSplit("val", True)),
    ({"name": "ring8"}, "auto", EvalSplit("test", True)),  # synthetic: an independent draw
    ({"name": "sines", "split": "train"}, "val", EvalSplit("val", True)),
    ({"name": "folder", "path": "images"}, "auto", EvalSplit("all", False)),  # user data without {split}
    ({"name": "npy", "path": "{split}.npz", "split": "train"}, "auto", EvalSplit("test", True)),
])
def test_resolve_eval_split(data, split, expected):
    assert resolve_eval_split(DataConfig(**data), split) == expected


def test_user_data_without_split_has_only_auto():
    with pytest.raises(DataError, match=r"has no splits.*\{split\} in data.path"):
        resolve_eval_split(DataConfig(name="folder", path="images"), "test")


def test_toys_are_evaluated_on_an_independent_draw():
    cfg = DataConfig(name="ring8", n=500, batch_size=10)
    train = load_dataset(cfg)
    test, where = load_eval_data(train, cfg)
    again, _ = load_eval_data(train, cfg)
    val, _ = load_eval_data(train, cfg, "val")
    assert where == EvalSplit("test", True) and test.split == "test" and len(test) == 500
    assert torch.equal(test.x, again.x)  # seeded: the same held-out draw every time
    assert not torch.equal(test.x, train.x) and not torch.equal(val.x, test.x)
    assert torch.equal(load_dataset(cfg.model_copy(update={"split": "train"})).x, train.x)  # train = all


def test_user_data_with_split_in_the_path(tmp_path):
    for split, value in (("train", 0.0), ("test", 1.0)):
        np.save(tmp_path / f"{split}.npy", np.full((20, 3), value, dtype=np.float32))
    cfg = DataConfig(name="npy", path=str(tmp_path / "{split}.npy"), split="train", batch_size=4)
    train = load_dataset(cfg)
    test, where = load_eval_data(train, cfg)
    assert train.x.max() == 0 and test.x.min() == 1 and where == EvalSplit("test", True)
    with pytest.raises(DataError, match="val.npy does not exist"):
        load_eval_data(train, cfg, "val")
    with pytest.raises(DataError, match=r"holds \{split\}: set data.split"):
        load_dataset(cfg.model_copy(update={"split": "all"}))


def test_digits_likelihood_is_measured_on_the_test_split(tmp_path, capsys):
    """vae-digits trains on the train split: eval.json's bits/dim are the test split's, from the
    trainer and from `stablegen eval` alike, and differ from the training images' bits/dim."""
    run_dir = tmp_path / "vae"
    run = sg.train("vae-digits", {"train.steps": 20, "train.progress": False, "train.sample_every": 0,
                                  "train.threads": 1, "eval.metrics": ["nll"]}, run_dir=run_dir, report=False)
    record = json.loads((run_dir / "eval.json").read_text())
    assert record["split"] == "test" and record["held_out"] is True
    test_bpd = run.evaluate(["nll"], split="test")["bpd"]
    assert record["metrics"]["bpd"] == pytest.approx(test_bpd, rel=1e-3)
    assert abs(run.evaluate(["nll"], split="train")["bpd"] - test_bpd) > 1e-3
    assert main(["eval", str(run_dir), "--metrics", "nll"]) == 0
    assert "against the test split (held out)" in capsys.readouterr().err
    record = json.loads((run_dir / "eval.json").read_text())
    assert record["split"] == "test" and record["metrics"]["bpd"] == pytest.approx(test_bpd, rel=1e-3)
