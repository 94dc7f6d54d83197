"""Hyperparameter search with Optuna (Akiba et al. 2019, "Optuna: A Next-generation
Hyperparameter Optimization Framework", KDD): `stablegen tune RECIPE --space space.yaml
--trials N --metric NAME`.

A space file (stablegen.tune_space) maps recipe keys to distributions, plus fixed overrides.
Each trial trains in-process (stablegen.api.train) with its overrides, reports the metric at
every periodic eval (trial.report) so the pruner can end it early, and returns the metric of
the final eval. Trials are evaluated on the validation split of data that has one (eval.split
= val while eval.split is auto), so the search never selects on the training data nor on the
test split that the best recipe's own run reports on (best.yaml keeps eval.split: auto, i.e.
test; docs/data.md). A trial the guard stopped, whose metric is not finite or whose training raised
a ValueError is recorded as failed, with the diagnosis in its user attributes; the study goes
on. Samplers: TPE (Bergstra et al. 2011), Gaussian process, random, grid, CMA-ES (Hansen
2016); pruners: median stopping (Golovin et al. 2017), Hyperband (Li et al. 2018). Workers
share a study through Optuna's RDB storage (sqlite:///, postgresql://) or a journal file
(journal:PATH). --out receives best.yaml (the full recipe of the best trial), trials.md and
trials.csv, study.journal (the default storage) and trials/ (one run directory per trial).
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import math
import socket
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, NoReturn

from .recipe import RecipeError, dump_recipe, load_recipe, parse_overrides
from .train.checkpoint import atomic_write_text
from .tune_space import Space, SpaceError, load_space

if TYPE_CHECKING:
    import optuna

Direction = Literal["minimize", "maximize"]
SAMPLERS = ("tpe", "gp", "random", "grid", "cmaes")
PRUNERS = ("median", "hyperband", "none")
REPORTS_PER_TRIAL = 5  # periodic evals per trial when the recipe has none and a pruner needs them

# eval result key -> (the metric that computes it, the better direction); see stablegen.metrics.evaluate
RESULTS: dict[str, tuple[str, Direction | None]] = {
    "fid": ("fid", "minimize"), "kid": ("kid", "minimize"), "is": ("is", "maximize"),
    "precision": ("prdc", "maximize"), "recall": ("prdc", "maximize"), "density": ("prdc", "maximize"),
    "coverage": ("prdc", "maximize"), "modes": ("modes", "maximize"), "hq": ("modes", "maximize"),
    "spread": ("modes", None), "reverse_kl": ("modes", "minimize"), "class_coverage": ("classes", "maximize"),
    "class_kl": ("classes", "minimize"), "classes_covered": ("classes", "maximize"),
    "stacked_modes": ("stacked_modes", "maximize"), "stacked_kl": ("stacked_modes", "minimize"),
    "nll": ("nll", "minimize"), "bpd": ("nll", "minimize"), "recon": ("recon", "minimize"),
    "diversity": ("diversity", None),  # a ratio to the data's: closer to 1 is better, no direction
}


class TuneError(RecipeError):
    """A setting that makes every trial useless (the metric is never computed); stops the study."""


class TrialFailed(Exception):
    """A trial that diverged or could not train; recorded as failed, the study goes on."""


# ---- binding a space to a recipe ----------------------------------------------------------------
def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Every dotted key of a dumped recipe: sections, values and list elements (optim.g.betas.0)."""
    out: dict[str, Any] = {}
    for k, v in tree.items() if isinstance(tree, dict) else enumerate(tree):
        out[f"{prefix}{k}"] = v
        if isinstance(v, (dict, list)) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
    return out


def _expand(flat: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Dotted values -> recipe overrides: an index key (optim.g.betas.0) rewrites one element of
    the list it points into, starting from the list in `flat`."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        head, _, last = key.rpartition(".")
        if last.isdigit() and isinstance(flat.get(head), list):
            items = list(out.get(head, flat[head]))
            items[int(last)] = value
            out[head] = items
        else:
            out[key] = value
    return out


class Objective:
    """One Optuna trial: suggest the space's values, train with them, report, return the metric."""

    def __init__(self, recipe: str | Path | dict, space: Space, metric: str, direction: Direction | None,
                 out: Path, prune: bool):
        self.recipe, self.space, self.metric, self.out = recipe, space, metric, Path(out)
        where = f"space {space.source}"
        raw_flat = _flatten(load_recipe(recipe).model_dump(mode="json"))
        fixed = _expand(raw_flat, space.fixed)
        try:
            base = load_recipe(recipe, fixed)
        except RecipeError as e:
            raise SpaceError(f"{where}: fixed: {e}") from None
        self.flat = _flatten(base.model_dump(mode="json"))
        for key, p in space.params.items():
            for k in (key, *p.also):
                self._check_key(k, fixed, p.corners()[0], where)
            for v in p.corners():
                try:
                    load_recipe(recipe, {**fixed, **self.expand({key: v})})
                except RecipeError as e:
                    raise SpaceError(f"{where}: {key} = {v!r} is not accepted by the recipe: {e}") from None
        self.direction, auto = _metric_setup(metric, direction, base.eval.metrics)
        self.steps, self.every = base.train.steps, base.eval.every
        if prune and not self.every:
            self.every = auto["eval.every"] = max(self.steps // REPORTS_PER_TRIAL, 1)
        self.overrides = {**fixed, **auto}  # every trial's, before its own values
        self.split = _selection_split(base) if "eval.split" not in fixed else None
        # every trial's too, but not part of best.yaml: quiet bars, selection on the validation split
        self.trial_only = {} if "train.progress" in fixed else {"train.progress": False}
        if self.split is not None:
            self.trial_only["eval.split"] = self.split
        self.notes = [f"eval.every = {self.every} (periodic evals for the pruner)"] if "eval.every" in auto else []
        if "eval.metrics" in auto:
            self.notes.append(f"eval.metrics += {auto['eval.metrics'][-1]} (computes {metric})")
        if self.split is not None:
            self.notes.append(f"eval.split = {self.split} in trials (the search selects on the validation split; "
                              f"best.yaml keeps eval.split: {base.eval.split})")

    def _check_key(self, key: str, fixed: dict, sample: Any, where: str) -> None:
        if key in self.flat:
            if isinstance(self.flat[key], dict):
                raise SpaceError(f"{where}: {key!r} is a recipe section, not a value; name one of its keys "
                                 f"({', '.join(self.flat[key])})")
            return
        try:  # the recipe's own message ("unknown recipe key ...; did you mean ...")
            load_recipe(self.recipe, {**fixed, key: sample})
        except RecipeError as e:
            raise SpaceError(f"{where}: {e}") from None
        hint = difflib.get_close_matches(key, [k for k, v in self.flat.items() if not isinstance(v, dict)], n=1)
        raise SpaceError(f"{where}: unknown recipe key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))

    def expand(self, values: dict[str, Any]) -> dict[str, Any]:
        """Parameter values -> recipe overrides (tied `also` keys included)."""
        return _expand(self.flat, {k: v for key, v in values.items() for k in (key, *self.space.params[key].also)})

    def baseline(self) -> dict[str, Any] | None:
        """The recipe's own values, when the space holds every one of them."""
        params = {key: self.flat.get(key) for key in self.space.params}
        ok = all(p.contains(params[key]) and all(self.flat.get(k) == params[key] for k in p.also)
                 for key, p in self.space.params.items())
        return params if ok else None

    def __call__(self, trial: optuna.Trial) -> float:
        from .api import train

        values = {key: p.suggest(trial, key) for key, p in self.space.params.items()}
        overrides = {**self.overrides, **self.expand(values)}
        run_dir = _fresh(self.out / "trials" / f"{trial.study.study_name}-{trial.number:04d}")
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("host", socket.gethostname())
        reporter = _Reporter(trial, self.metric, self.every, self.steps)
        start = time.perf_counter()
        try:
            run = train(self.recipe, {**self.trial_only, **overrides}, run_dir=run_dir, on_eval=reporter,
                        report=False)
        except (TrialFailed, TuneError):
            raise
        except RecipeError as e:  # values that do not go together
            _fail(trial, f"invalid recipe: {e}")
        except ValueError as e:  # e.g. non-finite generated samples at an eval
            _fail(trial, f"{e}{_last_event(run_dir)}")
        finally:
            trial.set_user_attr("train_seconds", round(time.perf_counter() - start - reporter.seconds, 3))
        if run.status == "interrupted":
            raise KeyboardInterrupt(f"trial {trial.number} interrupted")
        summary = _read_summary(run_dir)
        trial.set_user_attr("events", summary.get("events", {}))
        if run.status == "stopped":
            _fail(trial, f"the guard stopped the run at step {summary.get('steps')}: {summary.get('message', '')}")
        if reporter.value is None:
            raise _missing(self.metric, reporter.keys)
        if not math.isfinite(reporter.value):
            _fail(trial, f"{self.metric} = {reporter.value} is not finite")
        return reporter.value


class _Reporter:
    """on_eval callback: trial.report at each periodic eval, prune, keep the newest value."""

    def __init__(self, trial: optuna.Trial, metric: str, every: int, steps: int):
        self.trial, self.metric, self.every, self.steps = trial, metric, every, steps
        self.value: float | None = None
        self.keys: list[str] = []
        self.reported: set[int] = set()
        self.seconds = 0.0  # spent here, not training

    def __call__(self, step: int, results: dict[str, float]) -> None:
        start = time.perf_counter()
        try:
            self.keys, self.value = list(results), results.get(self.metric)
            # inside the training loop (a periodic eval not seen before) raising is safe; the
            # final eval (same step again, or a guard stop's step) only records the value
            periodic = self.every > 0 and step > 0 and step % self.every == 0 and step not in self.reported
            if not periodic:
                return
            if self.value is None:
                raise _missing(self.metric, list(results))
            self.reported.add(step)
            if math.isnan(self.value):
                return
            self.trial.report(self.value, step)
            if step < self.steps and self.trial.should_prune():
                import optuna

                raise optuna.TrialPruned(f"pruned at step {step} ({self.metric} = {self.value:.4g})")
        finally:
            self.seconds += time.perf_counter() - start


def _missing(metric: str, keys: list[str]) -> TuneError:
    return TuneError(f"--metric {metric!r} is not among the eval results ({', '.join(keys) or 'none'}); "
                     f"name one of them")


def _fail(trial: optuna.Trial, diagnosis: str) -> NoReturn:
    trial.set_user_attr("diagnosis", diagnosis)
    raise TrialFailed(diagnosis) from None


def _fresh(path: Path) -> Path:
    """`path`, or path-2, path-3, ... when a run already lives there (a study started afresh)."""
    candidate, i = path, 1
    while candidate.exists():
        i += 1
        candidate = path.with_name(f"{path.name}-{i}")
    return candidate


def _read_summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _last_event(run_dir: Path) -> str:
    """'; last guard event: ...' from events.jsonl (the guard's view of a run that raised)."""
    try:
        lines = (run_dir / "events.jsonl").read_text().splitlines()
        event = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return ""
    return f"; last guard event at step {event['step']}: {event['message']}" if event else ""


def _selection_split(recipe) -> str | None:
    """'val' when the recipe evaluates with eval.split auto on data with a validation split that
    training never sees (digits or fashion-mnist trained on train, synthetic draws, user data
    with {split}); else None (the recipe's own eval.split stays)."""
    from .data import DataError, resolve_eval_split

    if recipe.eval.split != "auto":
        return None
    try:
        return "val" if resolve_eval_split(recipe.data, "val").held_out else None
    except DataError:  # data without splits
        return None


def _metric_setup(metric: str, direction: str | None, eval_metrics: list[str]) -> tuple[Direction, dict]:
    """The study direction and the eval.metrics override that computes `metric` (if needed)."""
    known = RESULTS.get(metric)
    if direction is None:
        if known is None or known[1] is None:
            raise RecipeError(f"--metric {metric!r}: give --direction minimize or maximize")
        direction = known[1]
    if direction not in ("minimize", "maximize"):
        raise RecipeError(f"--direction {direction!r}: choose minimize or maximize")
    if known is not None and known[0] not in eval_metrics:
        return direction, {"eval.metrics": [*eval_metrics, known[0]]}
    if known is None and not eval_metrics:
        raise RecipeError(f"--metric {metric!r} is not a result of a built-in metric ({', '.join(RESULTS)}) and "
                          f"the recipe computes none: set eval.metrics under fixed: in the space")
    return direction, {}


# ---- Optuna pieces --------------------------------------------------------------------------------
def _storage(url: str | None, out: Path):
    import optuna

    url = url or f"journal:{out / 'study.journal'}"
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    import sqlalchemy.exc

    try:  # heartbeats let other workers mark the trials of a crashed worker as failed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=60)
    except ImportError as e:
        raise RecipeError(f"--storage {url}: {e} (PostgreSQL needs a driver: pip install psycopg2-binary)") from None
    except (ValueError, sqlalchemy.exc.SQLAlchemyError) as e:
        raise RecipeError(f"--storage {url}: {e.__class__.__name__}: {e} (give sqlite:///FILE, "
                          f"postgresql://USER:PASSWORD@HOST/DB or journal:FILE)") from None


def _sampler(name: Any, seed: int, space: Space):
    import optuna

    if not isinstance(name, str):
        return name  # an optuna sampler
    s = optuna.samplers
    if name == "grid":
        return s.GridSampler(space.grid(), seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise RecipeError("--sampler cmaes needs the cmaes package: pip install cmaes") from None
        return s.CmaEsSampler(seed=seed)
    if name == "tpe":  # constant liar: parallel workers do not all pick the same point
        return s.TPESampler(seed=seed, constant_liar=True)
    makers = {"gp": s.GPSampler, "random": s.RandomSampler}
    if name not in makers:
        raise RecipeError(f"--sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    return makers[name](seed=seed)


def _pruner(name: Any, every: int, steps: int):
    import optuna

    if not isinstance(name, str):
        return name  # an optuna pruner
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(every, 1), max_resource=steps, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise RecipeError(f"--pruner {name!r}: choose one of {', '.join(PRUNERS)}")


def search(recipe: str | Path | dict, space: str | Path | dict | Space, *, metric: str, trials: int | None = None,
           direction: Direction | None = None, sampler: Any = "tpe", pruner: Any = "median",
           storage: str | None = None, study: str | None = None, seed: int = 0, out: str | Path | None = None,
           baseline: bool = True, overrides: dict[str, Any] | list[str] | None = None,
           log: Callable[[str], None] | None = None) -> optuna.Study:
    """Run (or join) an Optuna study over `space` on `recipe`; returns the study.

    trials: the study's total (trials already in the storage count, from any worker); default
    for the grid sampler: the grid's size. sampler / pruner: a name or an optuna object.
    storage: an RDB URL or journal:FILE (default journal:OUT/study.journal); study: its name
    (default the recipe's name); out: where best.yaml, trials.md/.csv and trials/ go
    (default tune/STUDY). baseline: first run the recipe's own values (when the space holds them).
    overrides: fixed recipe overrides on top of the space's fixed: (dict or ["key=value", ...]).
    """
    import optuna

    counted = tuple(s for s in optuna.trial.TrialState if s.name != "WAITING")  # started or done, any worker
    log = log or (lambda message: None)
    space = space if isinstance(space, Space) else load_space(space)
    if overrides:
        extra = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides)
        searched = sorted(set(extra) & {k for key, p in space.params.items() for k in (key, *p.also)})
        if searched:
            raise SpaceError(f"override {searched[0]!r} is a searched parameter of space {space.source}")
        space = Space(space.params, {**space.fixed, **extra}, space.source)
    name = study or load_recipe(recipe).name
    out = Path(out) if out is not None else default_out(name)
    objective = Objective(recipe, space, metric, direction, out, prune=pruner != "none")
    if trials is None:
        if sampler != "grid":
            raise RecipeError("--trials is required (only --sampler grid defaults to the size of the grid)")
        trials = math.prod(len(v) for v in space.grid().values())
    study_obj = optuna.create_study(storage=_storage(storage, out), study_name=name,
                                    direction=objective.direction, load_if_exists=True,
                                    sampler=_sampler(sampler, seed, space),
                                    pruner=_pruner(pruner, objective.every, objective.steps))
    _claim(study_obj, objective, metric)
    for note in objective.notes:
        log(f"tune: {note}")
    start = objective.baseline() if baseline and sampler != "grid" and not study_obj.trials else None
    if start is not None:
        study_obj.enqueue_trial(start, user_attrs={"baseline": True}, skip_if_exists=True)
    held = len(study_obj.get_trials(deepcopy=False, states=counted))
    log(f"tune: study {name!r} ({objective.direction} {metric}) holds {held} of {trials} trials; results in {out}")

    def write(s: optuna.Study, _trial: Any = None) -> None:
        write_results(s, recipe, metric, out, split=objective.split)

    try:
        if held < trials:
            study_obj.optimize(objective, n_trials=trials - held, catch=(TrialFailed,), gc_after_trial=False,
                               callbacks=[optuna.study.MaxTrialsCallback(trials, states=counted), write])
    finally:
        write(study_obj)
    return study_obj


def default_out(study: str) -> Path:
    return Path("tune") / study


def _claim(study: optuna.Study, objective: Objective, metric: str) -> None:
    """Workers joining a study must search the same space for the same metric."""
    mine = {"metric": metric, **objective.space.to_json()}
    theirs = study.user_attrs.get("stablegen")
    if theirs is None:
        study.set_user_attr("stablegen", mine)
    elif theirs != mine:
        raise RecipeError(f"study {study.study_name!r} in this storage searches another space or metric "
                          f"(metric {theirs.get('metric')!r}); choose another --study")
    if study.direction.name.lower() != objective.direction:
        raise RecipeError(f"study {study.study_name!r} in this storage is to {study.direction.name.lower()}, "
                          f"not {objective.direction}; choose another --study")


# ---- results ----------------------------------------------------------------------------------------
def _seconds(t: optuna.trial.FrozenTrial) -> float | None:
    return t.duration.total_seconds() if t.duration is not None else None


def _note(t: optuna.trial.FrozenTrial, metric: str) -> str:
    state = t.state.name.lower()
    if state == "pruned" and t.intermediate_values:
        step = max(t.intermediate_values)
        return f"pruned at step {step} ({metric} = {t.intermediate_values[step]:.4g})"
    notes = ["baseline (the recipe's own values)"] if t.user_attrs.get("baseline") else []
    return "; ".join(notes + [t.user_attrs.get("diagnosis", "")]).strip("; ")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v)


def write_results(study: optuna.Study, recipe: str | Path | dict, metric: str, out: Path,
                  split: str | None = None) -> Path | None:
    """trials.csv and trials.md (one row per trial) and best.yaml; returns best.yaml's path
    (None while no trial has completed). split: the eval split trials were measured on, if set."""
    trials = study.get_trials(deepcopy=False)
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = study.best_trial if complete else None
    header = ["trial", "state", metric, "seconds", "train_seconds", *params, "note"]
    rows = [[t.number, t.state.name.lower(), t.value if t.state.name == "COMPLETE" else None, _seconds(t),
             t.user_attrs.get("train_seconds"), *[t.params.get(k) for k in params],
             "; ".join(filter(None, ["best" if best is not None and t.number == best.number else "",
                                     _note(t, metric)]))]
            for t in trials]
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *[[("" if v is None else v) for v in r] for r in rows]])
    atomic_write_text(out / "trials.csv", buf.getvalue())

    counts = {s: sum(t.state.name.lower() == s for t in trials) for s in ("complete", "pruned", "fail", "running")}
    overhead = [_seconds(t) - t.user_attrs["train_seconds"] for t in complete if "train_seconds" in t.user_attrs]
    on = f" on the {split} split" if split else ""
    lines = [f"# Study {study.study_name}: {study.direction.name.lower()} {metric}{on}", "",
             f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "."]
    if best is not None:
        lines.append(f"Best: trial {best.number}, {metric} = {best.value:.6g} (best.yaml).")
    if overhead:
        lines.append(f"Median time per trial outside training: {statistics.median(overhead):.2f} s "
                     f"(over {len(overhead)} complete trials).")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "/") for v in r) + " |" for r in rows]
    atomic_write_text(out / "trials.md", "\n".join(lines) + "\n")
    if best is None:
        return None
    comment = (f"# best recipe of study {study.study_name}: trial {best.number}, {metric} = {best.value:.6g}{on}\n"
               f"# values: {', '.join(f'{k}={_fmt(v)}' for k, v in best.params.items())}\n")
    path = out / "best.yaml"
    atomic_write_text(path, comment + dump_recipe(load_recipe(recipe, best.user_attrs["overrides"])))
    return path


# ---- command line -----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="built-in recipe name or recipe.yaml (see `stablegen recipes`)")
    p.add_argument("overrides", nargs="*", help="fixed key=value overrides for every trial, e.g. train.steps=500")
    p.add_argument("--space", required=True,
                   help="search space YAML (recipe key -> distribution, plus fixed:) or a built-in space name")
    p.add_argument("--trials", type=int, help="trials in the study, across all workers (grid: default its size)")
    p.add_argument("--metric", required=True, help="eval result to optimize: reverse_kl, modes, hq, fid, kid, bpd, ...")
    p.add_argument("--direction", choices=("minimize", "maximize"), help="default: the metric's better direction")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe")
    p.add_argument("--pruner", choices=PRUNERS, default="median")
    p.add_argument("--storage", help="sqlite:///tune.db, postgresql://USER:PASSWORD@HOST/DB or journal:FILE "
                                     "(default journal:OUT/study.journal)")
    p.add_argument("--study", help="study name (default: the recipe's name); workers with one storage and "
                                   "study name share the study")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (every trial trains with the recipe's train.seed)")
    p.add_argument("--out", help="folder for best.yaml, trials.md/.csv and trials/ (default tune/STUDY)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="do not start with a trial of the recipe's own values")


def run(args: argparse.Namespace) -> int:
    """`stablegen tune`: exit 0 when a best recipe was written, 3 when no trial completed, 2 on bad input."""
    from .exitcodes import EXIT_INPUT, EXIT_OK, EXIT_STOPPED

    try:
        import optuna  # noqa: F401
    except ImportError:
        print("error: stablegen tune needs optuna: pip install 'stablegen[tune]'", file=sys.stderr)
        return EXIT_INPUT
    if args.trials is not None and args.trials < 1:
        print(f"error: --trials must be at least 1, got {args.trials}", file=sys.stderr)
        return EXIT_INPUT
    study = search(args.recipe, args.space, metric=args.metric, trials=args.trials, direction=args.direction,
                   sampler=args.sampler, pruner=args.pruner, storage=args.storage, study=args.study, seed=args.seed,
                   out=args.out, baseline=args.baseline, overrides=list(args.overrides),
                   log=lambda message: print(message, file=sys.stderr))
    out = Path(args.out) if args.out else default_out(study.study_name)
    if not any(t.state.name == "COMPLETE" for t in study.trials):
        print(f"no trial completed; see {out / 'trials.md'}")
        return EXIT_STOPPED
    best = study.best_trial
    print(f"best: trial {best.number}, {args.metric} = {best.value:.6g}; recipe {out / 'best.yaml'}; "
          f"table {out / 'trials.md'}")
    return EXIT_OK
