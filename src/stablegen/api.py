"""The Python API: the same recipes and overrides as the command line.

    import stablegen as sg
    run = sg.train("gan-ring8", {"optim.g.lr": 1e-4}, run_dir="runs/ring")
    x = run.sample(2500, ema=True, seed=0)
    print(run.evaluate(["modes", "prdc"]))
    method = sg.load("runs/ring")
    sg.train("gan-ring8", nets={"G": MyG(), "D": MyD()})    # your own nets (docs/custom.md)
"""

from __future__ import annotations

import importlib
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .base import PYTHON_NET, DataInfo, Method, check_net
from .data import PYTHON, Dataset, dataset_from, keep_normalization, load_dataset
from .methods import FAMILIES
from .recipe import Recipe, RecipeError, dump_recipe, load_recipe, parse_overrides
from .train.checkpoint import CheckpointError, atomic_write_text, latest_checkpoint, load_checkpoint
from .train.ema import EMA
from .train import distributed
from .train.lock import run_lock
from .train.loop import Trainer, resolve_device


def seed_everything(seed: int, deterministic: bool, compile: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic and compile:  # also sets inductor's flag, at the cost of importing inductor (~3 s)
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif deterministic:  # the same ATen flag, without the inductor import that eager nets never use
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def build_method(recipe: Recipe, data: Dataset, nets: Mapping[str, nn.Module] | None = None) -> Method:
    """The recipe's method for `data`. The user's nets (model.nets: import paths, or objects given
    here as `nets`) are each tried on a dummy batch against their family's contract; the family
    builds the nets the recipe does not name."""
    family = FAMILIES[recipe.model.family]
    cfg, info = recipe.model, data.info
    own = user_nets(cfg, info, nets or {})
    try:
        method = family.build(cfg, info, nets=own) if own else family.build(cfg, info)
        if own and family.contracts is not None:
            contracts = family.contracts(cfg, info)
            for name, net in own.items():
                check_net(name, net, contracts[name])
    except ValueError as e:
        raise RecipeError(str(e)) from None
    return method


def user_nets(cfg: Any, info: DataInfo, given: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    """The nets model.nets names: those given from Python taken from `given`, the others built
    from their import paths."""
    paths: dict[str, str] = getattr(cfg, "nets", {})
    if extra := [n for n in given if n not in paths]:
        raise RecipeError(f"nets {', '.join(extra)} given, but the recipe's model.nets does not name them: the "
                          f"run builds them itself (model.nets: {paths or '{}'})")
    missing_python_nets(paths, given)
    out: dict[str, nn.Module] = {}
    for name, path in paths.items():
        if name in given:
            if not isinstance(given[name], nn.Module):
                raise RecipeError(f"nets[{name!r}] must be a torch.nn.Module, got {type(given[name]).__name__}")
            out[name] = given[name]
        else:
            out[name] = import_net(name, path, info, cfg.net_args.get(name, {}))
    return out


def missing_python_nets(paths: Mapping[str, str], given: Mapping[str, Any]) -> None:
    """A RecipeError when model.nets records nets given from Python that are not given again."""
    missing = [n for n, p in paths.items() if p == PYTHON_NET and n not in given]
    if missing:
        names = ", ".join(missing)
        example = ", ".join(f"{n!r}: ..." for n in missing)
        raise RecipeError(f"model.nets {names}: the run was trained with nets given as Python objects, which a "
                          f"recipe cannot rebuild; pass them again (sg.open_run(run_dir, nets={{{example}}}), or "
                          f"sg.train(..., nets=...)), or name them by import path 'module:callable' in model.nets "
                          "so that any process can build them (docs/custom.md)")


def import_net(name: str, path: str, info: DataInfo, args: Mapping[str, Any]) -> nn.Module:
    """model.nets.<name> = "module:callable": import the module, call callable(info, **args).
    The one place where a recipe runs code of the user's (the module must be importable here:
    installed, or its folder on PYTHONPATH)."""
    module_name, _, attr = path.partition(":")
    where = f"model.nets.{name} = {path!r}"
    try:
        factory: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise RecipeError(f"{where}: cannot import {module_name!r} ({e}); the module must be importable in this "
                          "process: install its package or put its folder on PYTHONPATH") from None
    except Exception as e:  # noqa: BLE001 — the user's module failed while importing
        raise RecipeError(f"{where}: importing {module_name!r} raised {type(e).__name__}: {e}") from e
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise RecipeError(f"{where}: {factory.__name__!r} has no attribute {part!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise RecipeError(f"{where}: {attr} is a {type(factory).__name__}, not a callable")
    try:
        net = factory(info, **args)
    except Exception as e:  # noqa: BLE001 — the user's factory failed
        raise RecipeError(f"{where}: {attr}(info, **{dict(args)}) raised {type(e).__name__}: {e}") from e
    if not isinstance(net, nn.Module):
        raise RecipeError(f"{where}: {attr}(info, ...) returned a {type(net).__name__}, not a torch.nn.Module")
    return net


def _nets_as_overrides(nets: Mapping[str, Any] | None, overrides: dict[str, Any] | list[str] | None
                       ) -> tuple[dict[str, nn.Module], dict[str, Any] | list[str] | None]:
    """Nets given to `train`: an import path goes to the recipe as it is, an object as PYTHON_NET
    (the run records that it needs the object again). Returns (objects, overrides)."""
    if not nets:
        return {}, overrides
    if not isinstance(nets, Mapping):
        raise RecipeError(f"nets must be a dict of net name -> torch.nn.Module or 'module:callable', "
                          f"got {type(nets).__name__}")
    out = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    objects = {}
    for name, net in nets.items():
        if isinstance(net, nn.Module):  # replaces an import path of the recipe, and its arguments
            objects[name], out[f"model.nets.{name}"], out[f"model.net_args.{name}"] = net, PYTHON_NET, {}
        elif isinstance(net, str):
            out[f"model.nets.{name}"] = net
        else:
            raise RecipeError(f"nets[{name!r}] must be a torch.nn.Module or an import path 'module:callable', "
                              f"got {type(net).__name__}")
    return objects, out


class Run:
    """A run directory with its recipe, data and method (weights from the newest checkpoint)."""

    def __init__(self, run_dir: Path, recipe: Recipe, data: Dataset, method: Method,
                 ema_state: dict[str, Tensor] | None, status: str = "finished"):
        self.run_dir, self.recipe, self.data, self.method = Path(run_dir), recipe, data, method
        self.ema_state, self.status = ema_state, status

    def ema(self) -> EMA | None:
        if not self.ema_state:
            return None
        ema = EMA.of(self.method, self.recipe.train.ema)
        ema.load_state_dict(self.ema_state)
        return ema

    def _weights(self, ema: bool):
        e = self.ema() if ema else None
        return e.swapped() if e is not None else nullcontext()

    def sample(self, n: int, ema: bool = True, seed: int = 0, **kw: Any) -> Tensor:
        """n samples in data space, drawn with a seeded generator."""
        self.method.eval()
        with self._weights(ema):
            return self.data.denormalize(self.method.sample(n, generator=torch.Generator().manual_seed(seed), **kw).cpu())

    def evaluate(self, metrics: Sequence[str] | None = None, n: int | None = None, ema: bool = True,
                 features: str | None = None, seed: int = 0, split: str | None = None) -> dict[str, float]:
        """The metrics (default: the recipe's eval.metrics) against the held-out data: `split`
        auto, train, val or test (default: the recipe's eval.split; see data.resolve_eval_split)."""
        from .data import load_eval_data
        from .evaluation import evaluate_method

        cfg = self.recipe.eval.model_copy(update={k: v for k, v in
                                                   {"metrics": list(metrics) if metrics else None, "n": n,
                                                    "features": features, "split": split}.items() if v is not None})
        reference, _ = load_eval_data(self.data, self.recipe.data, cfg.split)
        self.method.eval()
        return evaluate_method(self.method, reference, cfg, ema=self.ema() if ema else None, seed=seed)


def _seed_and_threads(recipe: Recipe) -> None:
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    seed_everything(recipe.train.seed, recipe.train.deterministic, recipe.train.compile)


def train(recipe: str | Path | dict | None = None, overrides: dict[str, Any] | list[str] | None = None,
          run_dir: str | Path | None = None, resume: bool = False, stop_at: int | None = None,
          on_eval=None, report: bool = True, allow_changes: bool = False, data: Any = None,
          nets: Mapping[str, nn.Module | str] | None = None) -> Run:
    """Train a recipe (built-in name, YAML path or dict); returns the Run.

    nets: the user's own nets by the family's names ({"G": ..., "D": ...}; docs/custom.md), each a
    torch.nn.Module (the run records "<python object>": open_run needs it again) or an import path
    "module:callable" (recorded in recipe.yaml, so the command line can rebuild it).

    resume=True continues the run in `run_dir` from its newest checkpoint (recipe read from
    the run, overrides applied on top). An override of a key other than those in
    recipe.SAFE_ON_RESUME (train.steps, logging, eval) is refused, naming the keys, unless
    allow_changes=True. A run directory with a recipe but no checkpoint yet (killed early)
    starts from step 0, with a warning. One process trains in a run directory at a time
    (train/lock.py). `data`: a tensor, array or torch Dataset to train on instead of the
    recipe's data section (data/own.py). stop_at ends the run after that step as if it had been
    interrupted (a checkpoint is written; resume continues exactly). on_eval(step, results)
    is called after each periodic eval (an exception it raises, such as optuna's TrialPruned,
    ends the run and propagates). Under torchrun (WORLD_SIZE > 1) every process calls this;
    each takes its slice of the batch, and rank 0 writes the run directory. When torchrun has
    restarted the workers (--max-restarts) and `run_dir` holds a checkpoint, the run resumes.
    """
    from .train.checkpoint import list_checkpoints

    objects, overrides = _nets_as_overrides(nets, overrides)
    rank, world = distributed.setup()
    if run_dir is not None and distributed.restarted() and list_checkpoints(Path(run_dir) / "checkpoints"):
        resume = True  # a restarted worker continues the run from its newest checkpoint
    if resume:
        if run_dir is None:
            raise RecipeError("resume needs the run directory")
        run_dir = Path(run_dir)
        if not (run_dir / "recipe.yaml").is_file():
            raise CheckpointError(f"{run_dir} is not a run directory (no recipe.yaml)")
        recipe_obj = _resumed_recipe(run_dir, overrides, allow_changes)
        if not list_checkpoints(run_dir / "checkpoints"):
            import warnings

            warnings.warn(f"{run_dir} has no checkpoint yet (the run stopped before its first one): "
                          "training starts from step 0", stacklevel=2)
            resume = False
    else:
        recipe_obj = load_recipe(recipe, overrides)
        run_dir = Path(run_dir) if run_dir else distributed.from_rank_zero(  # the clock may differ per rank
            Path("runs") / f"{recipe_obj.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
            raise RecipeError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    with run_lock(run_dir) if rank == 0 else nullcontext():  # a second process on this run is refused
        _seed_and_threads(recipe_obj)
        if data is not None:  # from Python: the run says so, and open_run asks for the data again
            recipe_obj = recipe_obj.model_copy(update={"data": recipe_obj.data.model_copy(
                update={"name": PYTHON, "path": None})})
        data = load_dataset(recipe_obj.data) if data is None else dataset_from(data, recipe_obj.data)
        recipe_obj = recipe_obj.model_copy(update={"data": keep_normalization(recipe_obj.data, data)})
        method = build_method(recipe_obj, data, objects).to(resolve_device(recipe_obj.train.device))
        if world > 1:
            distributed.broadcast_state(method)
            torch.manual_seed(recipe_obj.train.seed + rank)  # each rank draws its own noise
        accelerate(method, recipe_obj)
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "recipe.yaml", dump_recipe(recipe_obj))
            if not resume:  # from step 0: the logs of an attempt that stopped before its first checkpoint go
                for name in ("metrics.jsonl", "events.jsonl", "summary.json", "eval.json"):
                    (run_dir / name).unlink(missing_ok=True)
        trainer = Trainer(method, data, recipe_obj, run_dir, rank=rank, world=world, on_eval=on_eval)
        if resume:
            step = trainer.resume()  # rank 0 also cuts the logs back to the checkpoint's step
            if world > 1:  # the checkpoint holds rank 0's noise stream: each rank gets its own again
                torch.manual_seed(recipe_obj.train.seed + rank + 1_000_003 * step)
                torch.distributed.barrier()  # the logs are cut before rank 0 appends to them
        status = trainer.fit(stop_at=stop_at)
        if report and rank == 0 and status != "interrupted":
            _write_report(run_dir)
    ema_state = trainer.ema.state_dict() if trainer.ema is not None else None
    return Run(run_dir, recipe_obj, data, method, ema_state, status)


def _resumed_recipe(run_dir: Path, overrides, allow_changes: bool) -> Recipe:
    """The run's recipe with `overrides` on top; changes that would make the resumed run differ
    from the one it continues are refused unless allowed."""
    from .recipe import unsafe_changes

    stored = load_recipe(run_dir / "recipe.yaml")
    resumed = load_recipe(run_dir / "recipe.yaml", overrides)
    changed = unsafe_changes(stored, resumed)
    if changed and not allow_changes:
        raise RecipeError(f"--resume with a changed recipe: {', '.join(changed)} differ from {run_dir / 'recipe.yaml'}; "
                          "only train.steps, logging, checkpoint and eval keys may change mid-run "
                          "(pass --allow-changes to resume anyway)")
    return resumed


def accelerate(method: Method, recipe: Recipe) -> None:
    """The recipe's speed switches: channels_last memory format, torch.compile of each net
    (in place, so parameter names and checkpoints stay the same)."""
    if recipe.train.channels_last:
        method.to(memory_format=torch.channels_last)
    if recipe.train.compile:
        if getattr(method, "needs_double_backward", False):
            raise RecipeError("train.compile=true cannot be combined with gradient penalties (GP / R1 / R2): "
                              "torch.compile does not support double backward; set the penalty weights to 0")
        for child in method.children():
            child.compile()


def _write_report(run_dir: Path) -> None:
    from .report import write_report

    try:
        write_report(run_dir)
    except Exception as e:  # noqa: BLE001 — a finished run must not be lost to its report
        import warnings

        warnings.warn(f"could not write {run_dir / 'report.html'}: {e}")


def open_run(run_dir: str | Path, checkpoint: str | Path | None = None, data: Any = None,
             nets: Mapping[str, nn.Module] | None = None) -> Run:
    """Rebuild a run's method from recipe.yaml and its newest (or given) checkpoint; `data`:
    the tensor / array / Dataset of a run trained on data given from Python; `nets`: the nets
    a run was trained with as Python objects (model.nets "<python object>"), by name; their
    weights are loaded from the checkpoint."""
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no recipe.yaml)")
    recipe = load_recipe(run_dir / "recipe.yaml")
    missing_python_nets(getattr(recipe.model, "nets", {}), nets or {})
    seed_everything(recipe.train.seed, False)
    if data is None and recipe.data.name == PYTHON:
        raise RecipeError(f"{run_dir} was trained on data given from Python: pass it again, "
                          "open_run(run_dir, data=...)")
    data = load_dataset(recipe.data) if data is None else dataset_from(data, recipe.data)
    method = build_method(recipe, data, nets)
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir / "checkpoints")
    tensors, meta = load_checkpoint(path)
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        method.load_state_dict(model)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the run's recipe ({e}); a run trained with nets "
                              "of your own names them in model.nets and needs the same nets back "
                              "(docs/custom.md)") from None
    method.to(resolve_device(recipe.train.device)).eval()
    ema_state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")} or None
    return Run(run_dir, recipe, data, method, ema_state, status=str(meta.get("status", "")))


def load(run_dir: str | Path, ema: bool = True, nets: Mapping[str, nn.Module] | None = None) -> Method:
    """A run's Method, ready to sample (EMA weights loaded when the run kept them); `nets` as in
    open_run."""
    run = open_run(run_dir, nets=nets)
    e = run.ema() if ema else None
    if e is not None:
        with torch.no_grad():
            for t, s in zip(e.live, e.shadow):
                t.copy_(s)
    return run.method
