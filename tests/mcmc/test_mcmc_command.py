"""`stablegen mcmc` as the lead wires it: add_arguments + run -> exit code."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pytest

from stablegen.mcmc import command


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stablegen mcmc")
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


def test_json_and_saved_draws(tmp_path, capsys):
    out = tmp_path / "draws.npy"
    code = run(["banana", "--kernel", "hmc", "--chains", "3", "--samples", "40", "--warmup", "30",
                "--seed", "1", "-o", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    for key in ("means", "sds", "rhat", "ess_bulk", "ess_tail", "acceptance", "gradient_evaluations",
                "seconds", "mean_error", "sd_error", "divergences"):
        assert key in result, key
    assert len(result["means"]) == 2 and result["gradient_evaluations"] > 0
    draws = np.load(out)
    assert draws.shape == (3, 40, 2)
    np.testing.assert_allclose(result["means"], draws.reshape(-1, 2).mean(0))


def test_text_report_and_reproducible(capsys):
    assert run(["ring8", "--kernel", "rwmh", "--chains", "2", "--samples", "30", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert "R-hat" in first and "ESS bulk" in first and "moment errors" in first
    assert run(["gaussian", "--kernel", "mala", "--dim", "20", "--chains", "2", "--samples", "20",
                "--json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert run(["gaussian", "--kernel", "mala", "--dim", "20", "--chains", "2", "--samples", "20",
                "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert a["means"] == b["means"] and len(a["rhat"]) == 20


def test_user_function(tmp_path, monkeypatch, capsys):
    (tmp_path / "cmd_target_mcmc.py").write_text(
        "def logp(x):\n    return -0.5 * (x ** 2).sum(-1)\n"
        "def scalar(x):\n    return (x ** 2).sum()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "cmd_target_mcmc", raising=False)
    assert run(["cmd_target_mcmc:logp", "--dim", "2", "--chains", "2", "--samples", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean_error"] is None
    assert run(["cmd_target_mcmc:scalar", "--dim", "2", "--samples", "20"]) == 2
    assert "must map (chains, dim)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["gausian"], "did you mean 'gaussian'"),
    (["no_such_module_xyz:f", "--dim", "2"], "cannot import"),
    (["cmd_missing_dim_xyz:f"], "--dim"),
    (["banana", "--chains", "0"], "--chains"),
    (["banana", "--device", "cuda:99" if not __import__("torch").cuda.is_available() else "nonsense"],
     "--device"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("stablegen mcmc: error:")


# ---- warnings: no silent wrong answers ----------------------------------------------------
def run_json(argv: list[str], capsys) -> tuple[dict, str]:
    assert run(argv + ["--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_too_few_draws_warn_about_ess(capsys):
    result, err = run_json(["gaussian", "--dim", "2", "--chains", "2", "--samples", "20"], capsys)
    assert any("bulk ESS" in w and "< 400" in w and "--samples" in w for w in result["warnings"])
    assert "stablegen mcmc: warning:" in err and "bulk ESS" in err


def test_chains_in_different_modes_warn_about_rhat(capsys):
    result, _ = run_json(["ring8", "--kernel", "rwmh", "--chains", "2", "--samples", "30", "--seed", "3"],
                         capsys)
    assert max(result["rhat"]) > 1.01
    assert any(w.startswith("R-hat") and "> 1.01" in w for w in result["warnings"])


def test_funnel_divergences_warn_and_name_a_remedy(capsys):
    """The centered funnel's neck defeats any one step size: divergences, and the warning says
    what to try (a non-centered funnel, a higher target acceptance)."""
    result, err = run_json(["funnel", "--chains", "2", "--samples", "60", "--warmup", "60"], capsys)
    assert result["divergences"] > 0
    message = next(w for w in result["warnings"] if "divergent transitions" in w)
    assert "non-centered" in message and "--target-acceptance" in message
    assert "divergent transitions" in err


def test_text_report_says_when_there_is_nothing_to_warn_about(capsys):
    assert run(["gaussian", "--dim", "1", "--kernel", "rwmh", "--samples", "2000", "--warmup", "500"]) == 0
    captured = capsys.readouterr()
    assert "no warnings" in captured.out and "warning:" not in captured.err

