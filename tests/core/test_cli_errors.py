"""Every bad input of the command line: exit code 2 and one message naming what is wrong, no
traceback; an unexpected error: exit 1 and one line, the traceback with --debug."""

from __future__ import annotations

import numpy as np
import pytest

import stablegen as sg
from stablegen.cli import main

QUICK = {"train.steps": 2, "train.progress": False, "train.sample_every": 0, "train.checkpoint_every": 0,
         "train.threads": 1, "eval.metrics": []}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    sg.train("dcgan-digits", {**QUICK, "model.width": 8}, run_dir=root / "gan", report=False)
    sg.train("ddpm-digits", {**QUICK, "model.unet.channels": 8}, run_dir=root / "ddpm", report=False)
    return root


def _exit_2(capsys, argv, *needles):
    with pytest.raises(SystemExit) as e:  # argparse refuses it
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(n in err for n in needles), err


def _fails(capsys, argv, *needles, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ") and all(n in err for n in needles), err
    return err


@pytest.mark.parametrize("n", ["0", "-5", "many"])
def test_sample_count_must_be_positive(runs, tmp_path, capsys, n):
    _exit_2(capsys, ["sample", str(runs / "gan"), "-n", n, "-o", str(tmp_path / "x.npy")], "-n", "expected a whole number >= 1")


def test_eval_n_zero_and_sampling_steps_zero(runs, tmp_path, capsys):
    _exit_2(capsys, ["eval", str(runs / "gan"), "--n", "0"], "--n", ">= 1")
    _exit_2(capsys, ["sample", str(runs / "ddpm"), "-n", "2", "--steps", "0", "-o", str(tmp_path / "x.npy")],
            "--steps", ">= 1")


def test_truncation_on_an_image_gan(runs, tmp_path, capsys):
    _fails(capsys, ["sample", str(runs / "gan"), "-n", "4", "--truncate", "-o", str(tmp_path / "x.npy")],
           "truncate=True", "net=mlp")


def test_unknown_diffusion_sampler(runs, tmp_path, capsys):
    _fails(capsys, ["sample", str(runs / "ddpm"), "-n", "2", "--sampler", "bogus", "-o", str(tmp_path / "x.npy")],
           "unknown sampler 'bogus'", "ddim")


def test_report_and_compare_need_run_directories(runs, tmp_path, capsys):
    _fails(capsys, ["report", str(tmp_path / "missing")], "does not exist")
    _fails(capsys, ["compare", str(runs / "gan"), str(tmp_path / "missing"), "-o", str(tmp_path / "c.html")],
           "missing does not exist")
    folder = tmp_path / "images"
    folder.mkdir()
    _fails(capsys, ["report", str(folder)], "not a run directory")
    assert not (folder / "report.html").exists()  # nothing written into a folder that is not a run


def test_score_refuses_data_of_another_shape_and_a_method_without_scores(runs, tmp_path, capsys):
    np.save(tmp_path / "wide.npy", np.zeros((5, 1, 16, 16), np.float32))
    _fails(capsys, ["score", str(runs / "ddpm"), str(tmp_path / "wide.npy"), "-o", str(tmp_path / "s.npy")],
           "wide.npy", "(1, 16, 16)", "(1, 8, 8)")
    np.save(tmp_path / "ok.npy", np.zeros((5, 1, 8, 8), np.float32))
    err = _fails(capsys, ["score", str(runs / "gan"), str(tmp_path / "ok.npy"), "-o", str(tmp_path / "s.npy")],
                 "neither log_prob nor reconstruct")
    assert "use kind=" not in err  # no advice to pick a kind the method lacks too


def test_a_device_this_machine_lacks(tmp_path, capsys):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    _fails(capsys, ["train", "gan-ring8", "--run-dir", str(tmp_path / "r"), "train.device=mps"], "train.device=mps")


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(runs, tmp_path, capsys, monkeypatch):
    import stablegen.api as api

    def broken(*a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(api.Run, "sample", broken)
    argv = ["sample", str(runs / "gan"), "-n", "2", "-o", str(tmp_path / "x.npy")]
    err = _fails(capsys, argv, "unexpected ZeroDivisionError", "boom", "--debug", code=1)
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ZeroDivisionError):
        main(["--debug", *argv])
