"""stablegen tune: space validation, Optuna studies on SQLite and journal storage, failed and
pruned trials, the command line. Trials are tiny gan-ring8 runs (30 steps, 200 eval samples)."""

import argparse
import csv
import json
import math

import optuna
import pytest
import yaml

import stablegen.api
import stablegen.evaluation
from stablegen.recipe import RecipeError, load_recipe
from stablegen.tune import Objective, TuneError, add_arguments, run, search
from stablegen.tune_space import SpaceError, load_space

TINY = {"train.steps": 30, "eval.n": 200, "train.sample_every": 0, "train.threads": 1, "train.log_every": 10,
        "train.checkpoint_every": 0}
LR = {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}  # the generator's; the critic keeps its own
BETA1 = {"type": "float", "low": 0.0, "high": 0.9, "step": 0.1, "also": ["optim.d.betas.0"]}
LOSS = {"type": "categorical", "choices": ["ns", "hinge"]}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    """No Optuna INFO lines (trials already skip report.html: train(report=False))."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(**params):
    return {**params, "fixed": dict(TINY)}


def objective(spec, tmp_path, metric="hq"):
    return Objective("gan-ring8", load_space(spec), metric, None, tmp_path, prune=True)


# ---- the space ------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, message", [
    ({"optim.g.lrr": LR}, "did you mean 'optim.g.lr'"),
    ({"optim.q.lr": LR}, "unknown recipe key 'optim.q.lr'; did you mean 'optim.g.lr'"),
    ({"optim.g.lr": {**LR, "also": ["optim.d.lrr"]}}, "did you mean 'optim.d.lr'"),
    ({"optim.g": LR}, "'optim.g' is a recipe section"),
    ({"optim.g.lr": {**LR, "low": 0.0, "log": False}}, "optim.g.lr = 0.0 is not accepted by the recipe"),
    ({"model.loss": {"type": "categorical", "choices": ["ns", "bce"]}}, "model.loss = 'bce' is not accepted"),
])
def test_space_keys_and_values_checked_against_the_recipe(tmp_path, params, message):
    with pytest.raises(SpaceError, match=message):
        objective(space(**params), tmp_path)


@pytest.mark.parametrize("spec, message", [
    ({**LR, "low": 1e-2}, r"'optim.g.lr': low \(0.01\) is above high"),
    ({**LR, "low": 0.0}, "'optim.g.lr': log needs low > 0"),
    ({**LR, "step": 1e-4}, "'optim.g.lr': log and step cannot be combined"),
    ({**LR, "type": "floatt"}, "'optim.g.lr': .*'float', 'int', 'categorical'"),
    ({"type": "float", "high": 1.0}, "'optim.g.lr': low: Field required"),
    ({"type": "categorical", "choices": []}, "'optim.g.lr': choices: List should have at least 1 item"),
    ({**LR, "grid": [1e-5]}, r"'optim.g.lr': grid values \[1e-05\] lie outside"),
    ({**LR, "scale": 2}, "'optim.g.lr': scale: Extra inputs are not permitted"),
    (0.001, "'optim.g.lr' must be a distribution .*plain values go under fixed:"),
])
def test_space_distributions_checked(spec, message):
    with pytest.raises(SpaceError, match=message):
        load_space({"optim.g.lr": spec})


def test_space_file_errors(tmp_path):
    with pytest.raises(SpaceError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(SpaceError, match="names no parameter"):
        load_space({"fixed": {"train.steps": 10}})
    with pytest.raises(SpaceError, match="'optim.d.lr' set twice"):
        load_space({"optim.g.lr": {**LR, "also": ["optim.d.lr"]}, "optim.d.lr": LR})


def test_grid_needs_finite_values():
    grid = load_space({"optim.g.betas.0": BETA1, "model.loss": LOSS,
                       "model.width": {"type": "int", "low": 64, "high": 192, "step": 64}}).grid()
    assert grid["optim.g.betas.0"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert grid["model.loss"] == ["ns", "hinge"] and grid["model.width"] == [64, 128, 192]
    assert load_space({"optim.g.lr": {**LR, "grid": [1e-4, 1e-3]}}).grid() == {"optim.g.lr": [1e-4, 1e-3]}
    with pytest.raises(SpaceError, match="--sampler grid needs .* 'optim.g.lr' is a continuous float"):
        load_space({"optim.g.lr": LR}).grid()


def test_builtin_space_fits_its_recipe(tmp_path):
    obj = Objective("gan-grid25", load_space("gan-grid25"), "reverse_kl", None, tmp_path, prune=True)
    assert obj.direction == "minimize"
    recipe = load_recipe("gan-grid25")  # trial 0 is the recipe's own values, whatever they are now
    assert obj.baseline() == {"optim.g.lr": recipe.optim["g"].lr, "optim.d.lr": recipe.optim["d"].lr,
                              "optim.g.betas.0": recipe.optim["g"].betas[0], "model.loss": recipe.model.loss}
    assert obj.baseline()["model.loss"] == "lsgan"


def test_values_become_overrides(tmp_path):
    obj = objective(space(**{"optim.g.lr": LR, "optim.g.betas.0": BETA1}), tmp_path)
    assert obj.expand({"optim.g.lr": 3e-4, "optim.g.betas.0": 0.1}) == {
        "optim.g.lr": 3e-4, "optim.g.betas": [0.1, 0.999], "optim.d.betas": [0.1, 0.999]}
    assert obj.baseline() == {"optim.g.lr": 1e-3, "optim.g.betas.0": 0.5}  # the recipe's own values
    assert obj.overrides["eval.every"] == 6  # 30 steps / 5 periodic evals, for the pruner
    assert objective(space(**{"optim.g.lr": {**LR, "low": 2e-3}}), tmp_path).baseline() is None


def test_metric_direction_and_eval_metrics(tmp_path):
    assert objective(space(**{"optim.g.lr": LR}), tmp_path, "reverse_kl").direction == "minimize"
    obj = Objective("gan-ring8", load_space(space(**{"optim.g.lr": LR})), "precision", None, tmp_path, prune=False)
    assert obj.direction == "maximize" and obj.overrides["eval.metrics"] == ["modes", "prdc"]
    assert "eval.every" not in obj.overrides  # no pruner, no periodic evals added
    with pytest.raises(RecipeError, match="give --direction"):
        objective(space(**{"optim.g.lr": LR}), tmp_path, "diversity")


# ---- studies --------------------------------------------------------------------------------------
def test_study_on_sqlite_writes_best_recipe_and_table(tmp_path):
    db = f"sqlite:///{tmp_path / 'tune.db'}"
    spec = space(**{"optim.g.lr": LR, "optim.g.betas.0": BETA1, "model.loss": LOSS})
    study = search("gan-ring8", spec, metric="diversity", direction="maximize", trials=3, sampler="random",
                   pruner="none", storage=db, study="s", out=tmp_path / "out")
    stored = optuna.load_study(study_name="s", storage=db).trials
    assert [t.state.name for t in stored] == ["COMPLETE"] * 3
    assert stored[0].params == {"optim.g.lr": 1e-3, "optim.g.betas.0": 0.5, "model.loss": "ns"}  # the baseline
    assert stored[0].user_attrs["baseline"] is True
    best = max(stored, key=lambda t: t.value)
    assert study.best_trial.number == best.number

    recipe = load_recipe(tmp_path / "out" / "best.yaml")  # the full recipe, loadable as it is
    assert recipe.optim["g"].lr == pytest.approx(best.params["optim.g.lr"])
    assert recipe.optim["d"].betas[0] == pytest.approx(best.params["optim.g.betas.0"])
    assert recipe.model.loss == best.params["model.loss"] and recipe.train.steps == 30
    assert recipe.train.progress  # the tuner's quiet bars are not part of the recipe

    rows = list(csv.DictReader((tmp_path / "out" / "trials.csv").open()))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2] and {r["state"] for r in rows} == {"complete"}
    assert float(rows[best.number]["diversity"]) == pytest.approx(best.value)
    assert "best" in rows[best.number]["note"]
    table = (tmp_path / "out" / "trials.md").read_text()
    assert f"Best: trial {best.number}" in table and "outside training" in table
    assert (tmp_path / "out" / "trials" / f"s-{best.number:04d}" / "summary.json").is_file()


def test_workers_share_a_journal_study(tmp_path):
    storage = f"journal:{tmp_path / 'shared.journal'}"
    spec = space(**{"model.loss": LOSS})
    kw = dict(metric="diversity", direction="maximize", sampler="random", pruner="none", storage=storage, study="j")
    search("gan-ring8", spec, trials=2, out=tmp_path / "a", **kw)
    study = search("gan-ring8", spec, trials=3, out=tmp_path / "b", **kw)  # a second worker joins
    assert len(study.trials) == 3  # --trials counts the study's trials, whoever ran them
    assert len(list(csv.DictReader((tmp_path / "b" / "trials.csv").open()))) == 3
    assert sorted(p.name for p in (tmp_path / "b" / "trials").iterdir()) == ["j-0002"]
    with pytest.raises(RecipeError, match="searches another space or metric"):
        search("gan-ring8", spec, trials=4, out=tmp_path / "c", **{**kw, "metric": "hq", "direction": None})


def test_diverged_trial_fails_with_diagnosis_and_study_goes_on(tmp_path):
    spec = space(**{"optim.g.lr": {"type": "categorical", "choices": [2e-4, 1e30], "also": ["optim.d.lr"]}})
    spec["fixed"]["guard.nonfinite"] = "stop"  # the first non-finite loss ends the run
    study = search("gan-ring8", spec, metric="diversity", direction="maximize", sampler="grid", pruner="none",
                   out=tmp_path)
    by_lr = {t.params["optim.g.lr"]: t for t in study.trials}
    assert by_lr[2e-4].state.name == "COMPLETE"
    failed = by_lr[1e30]
    assert failed.state.name == "FAIL" and "non-finite" in failed.user_attrs["diagnosis"]
    assert failed.user_attrs["diagnosis"] in (tmp_path / "trials.md").read_text()


def test_nonfinite_metric_fails_the_trial(tmp_path, monkeypatch):
    monkeypatch.setattr(stablegen.evaluation, "evaluate_method", lambda *a, **k: {"diversity": math.nan})
    study = search("gan-ring8", space(**{"model.loss": LOSS}), metric="diversity", direction="maximize",
                   trials=1, pruner="none", out=tmp_path)
    assert study.trials[0].state.name == "FAIL"
    assert study.trials[0].user_attrs["diagnosis"] == "diversity = nan is not finite"


def test_pruned_trial_stops_early_and_keeps_its_logs(tmp_path):
    never_good = optuna.pruners.ThresholdPruner(lower=1e9)  # every reported value is "too low"
    study = search("gan-ring8", space(**{"model.loss": LOSS}), metric="diversity", direction="maximize",
                   trials=1, pruner=never_good, out=tmp_path)
    trial = study.trials[0]
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [6]
    lines = [json.loads(x) for x in (tmp_path / "trials" / "gan-ring8-0000" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 6 and "eval/diversity" in lines[-1]  # the log was closed whole
    assert "pruned at step 6" in (tmp_path / "trials.md").read_text()
    assert not (tmp_path / "best.yaml").exists()  # no trial completed


def test_metric_never_computed_stops_the_study(tmp_path):
    with pytest.raises(TuneError, match="'kid_mean' is not among the eval results \\(modes, hq, spread, reverse_kl\\)"):
        search("gan-ring8", space(**{"model.loss": LOSS}), metric="kid_mean", direction="minimize", trials=2,
               out=tmp_path)


def test_command_line(tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space(**{"model.loss": {"type": "categorical", "choices": ["hinge"]}})))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["gan-ring8", "train.steps=20", "--space", str(path), "--metric", "hq",
                              "--sampler", "grid", "--pruner", "none", "--out", str(tmp_path / "out")])
    assert run(args) == 0  # --trials defaults to the grid's size (1)
    assert "best: trial 0, hq = " in capsys.readouterr().out
    best = load_recipe(tmp_path / "out" / "best.yaml")
    assert best.model.loss == "hinge" and best.train.steps == 20  # the command line's override wins
    with pytest.raises(SpaceError, match="override 'model.loss' is a searched parameter"):
        run(parser.parse_args(["gan-ring8", "model.loss=ns", "--space", str(path), "--metric", "hq",
                               "--sampler", "grid", "--out", str(tmp_path / "o1")]))
    with pytest.raises(RecipeError, match="--trials is required"):
        run(parser.parse_args(["gan-ring8", "--space", str(path), "--metric", "hq", "--out", str(tmp_path / "o2")]))


def test_samplers_and_pruners_by_name(tmp_path):
    from stablegen.tune import _pruner, _sampler

    spec = load_space({"model.loss": LOSS})
    assert isinstance(_sampler("gp", 0, spec), optuna.samplers.GPSampler)
    assert isinstance(_sampler("tpe", 0, spec), optuna.samplers.TPESampler)
    assert isinstance(_pruner("hyperband", 6, 30), optuna.pruners.HyperbandPruner)
    with pytest.raises(RecipeError, match="--sampler 'bayes': choose one of tpe, gp, random, grid, cmaes"):
        _sampler("bayes", 0, spec)
    try:
        import cmaes  # noqa: F401
    except ImportError:
        with pytest.raises(RecipeError, match="pip install cmaes"):
            _sampler("cmaes", 0, spec)
    study = search("gan-ring8", space(**{"model.loss": LOSS}), metric="hq", trials=1, sampler="gp",
                   pruner="hyperband", out=tmp_path)
    assert study.trials[0].state.name == "COMPLETE"


def test_storage_urls(tmp_path):
    from stablegen.tune import _storage

    assert isinstance(_storage(f"journal:{tmp_path / 'j' / 'x.journal'}", tmp_path), optuna.storages.JournalStorage)
    assert isinstance(_storage(f"sqlite:///{tmp_path / 'x.db'}", tmp_path), optuna.storages.RDBStorage)
    with pytest.raises(RecipeError, match="--storage nosuch://x: .*give sqlite:///FILE"):
        _storage("nosuch://x", tmp_path)


def test_trials_select_on_the_validation_split(tmp_path):
    """A likelihood search on vae-digits (train split) scores trials on the val split, never the
    training images nor the test split the best recipe's own run reports on."""
    vae_space = {"optim.main.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
                 "fixed": {"train.steps": 10, "train.sample_every": 0, "train.threads": 1, "train.checkpoint_every": 0}}
    study = search("vae-digits", vae_space, metric="bpd", trials=1, pruner="none", out=tmp_path)
    assert study.trials[0].state.name == "COMPLETE"
    record = json.loads((tmp_path / "trials" / "vae-digits-0000" / "eval.json").read_text())
    assert record["split"] == "val" and record["held_out"] is True
    assert record["metrics"]["bpd"] == pytest.approx(study.trials[0].value)
    assert load_recipe(tmp_path / "best.yaml").eval.split == "auto"  # its own run reports on test
    assert "minimize bpd on the val split" in (tmp_path / "trials.md").read_text()
    assert "eval.split" not in study.trials[0].user_attrs["overrides"]
    # gan-ring8's val split is an independent draw; dcgan-digits trains on every digit: no val to hold out
    assert objective(space(**{"optim.g.lr": LR}), tmp_path).trial_only["eval.split"] == "val"
    dcgan = Objective("dcgan-digits", load_space(space(**{"optim.g.lr": LR})), "fid", None, tmp_path, prune=False)
    assert dcgan.split is None and "eval.split" not in dcgan.trial_only
