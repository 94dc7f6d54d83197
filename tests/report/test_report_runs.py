"""Reading run directories: torn lines, missing files, rollbacks and non-finite values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stablegen.report.plots import downsample, robust_smooth, smoothing_window
from stablegen.report.runs import load_run


def test_full_run_is_read(make_run):
    run = load_run(make_run())
    assert run.name == "gan-ring8-run" and run.recipe_name == "gan-ring8"
    assert run.family == "gan" and run.data_name == "ring8"
    assert run.status == "finished" and run.steps == 2000 and run.wall_time == 83.5
    assert run.event_counts == {"grad_explosion": 1, "loss_spike": 1, "nonfinite": 1}
    assert run.rollbacks == 1
    assert {"loss/d", "loss/g", "grad_norm/d", "lr/g", "health/d_accuracy", "eval/modes"} <= set(run.keys())
    assert [s.step for s in run.samples][-2:] == [2000, None]  # step grids in order, then final.png
    assert run.eval_metrics()["hq"] == 0.93


def test_rollback_keeps_the_surviving_trajectory_and_the_dropped_values(make_run):
    series = load_run(make_run()).series("loss/d")
    assert np.all(np.diff(series.steps) > 0)
    # Steps 1010..1200 were logged twice; the first pass (with the spike of 40 at 1200) is dropped.
    assert list(series.dropped_steps) == list(range(1010, 1201, 10))
    assert series.dropped_values[-1] == 40.0 and series.values.max() < 40.0
    assert len(series.steps) == 201


def test_malformed_lines_are_skipped_with_a_warning(tmp_path):
    run_dir = tmp_path / "torn"
    run_dir.mkdir()
    lines = [
        json.dumps({"step": 0, "time": 0.0, "loss/main": 1.0}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"time": 1.0, "loss/main": 2.0}),  # no step
        json.dumps({"step": 20, "time": 2.0, "loss/main": float("nan"), "grad_norm/main": float("inf")}),
        '{"step": 30, "time": 3.0, "loss/ma',  # torn by a crash
    ]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines))
    with pytest.warns(UserWarning) as caught:
        run = load_run(run_dir)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 4 and all(m.startswith(str(run_dir / "metrics.jsonl")) for m in messages)
    assert [m.split(":")[1] for m in messages] == ["2", "3", "4", "6"]  # the line numbers
    assert [r["step"] for r in run.metrics] == [0, 20]
    loss = run.series("loss/main")
    assert math.isnan(loss.values[1]) and loss.last_finite() == (0.0, 1.0)
    assert run.series("grad_norm/main").last_finite() is None


def test_empty_run_directory_is_tolerated(tmp_path):
    run = load_run(tmp_path)
    assert run.metrics == [] and run.events == [] and run.samples == []
    assert run.recipe == {} and run.eval is None and run.summary is None
    assert run.status == "unfinished" and run.steps == 0 and run.wall_time is None
    assert run.event_counts == {} and run.eval_metrics() == {}


def test_unreadable_json_and_yaml_are_ignored_with_a_warning(tmp_path):
    (tmp_path / "summary.json").write_text("{")
    (tmp_path / "recipe.yaml").write_text("a: [1, 2\n")
    with pytest.warns(UserWarning):
        run = load_run(tmp_path)
    assert run.summary is None and run.recipe == {} and run.recipe_text == "a: [1, 2\n"


def test_missing_run_directory_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        load_run(tmp_path / "nope")


def test_eval_metrics_fall_back_to_the_last_logged_values(make_run):
    run = load_run(make_run(summary=False, samples=False))
    (run.path / "eval.json").unlink()
    run = load_run(run.path)
    assert run.eval_metrics() == {"modes": 8.0, "hq": 0.9}  # the eval/* lines at step 2000
    assert run.status == "unfinished" and run.steps == 2000


def test_robust_smooth_ignores_a_spike():
    y = np.ones(101)
    y[50] = 1e6
    smooth = robust_smooth(y, 11)
    # A rolling median over 11 points never picks the single spike; the mean after it sees only ones.
    assert np.allclose(smooth, 1.0)
    ramp = np.linspace(0, 1, 200)
    assert np.allclose(robust_smooth(ramp, 21)[20:-20], ramp[20:-20])  # linear trends pass unchanged
    assert smoothing_window(10) == 1 and smoothing_window(10_000) == 101


def test_downsample_keeps_every_spike_in_its_band():
    x = np.arange(100_000, dtype=float)
    y = np.zeros_like(x)
    y[12_345] = 50.0
    xb, mid, lo, hi = downsample(x, y, 1000)
    assert len(xb) == len(mid) == len(lo) == len(hi) == 1000
    assert hi.max() == 50.0 and mid.max() == 0.0 and lo.min() == 0.0
    assert downsample(x[:10], y[:10], 1000)[2] is None  # short curves are left alone
