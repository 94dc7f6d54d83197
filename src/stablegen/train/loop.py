"""The Trainer: one short loop over a method's phases, for every family.

Per step: for each phase and repeat, draw a batch, compute the loss under the run's precision,
backward (scaled for fp16), unscale, measure / clip the gradient norm, let the guard veto
non-finite or exploding updates, step the phase's optimizer and scheduler. Then EMA, the
guard's verdict (rollback / stop), logging, samples, eval, checkpoints. Everything else lives
in small pieces: ema.py, guard.py, checkpoint.py, logging.py, schedule.py.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from ..base import Method, has_capability
from ..data import Dataset, InfiniteLoader
from ..recipe import OptimConfig, Recipe, RecipeError
from .checkpoint import (join_optimizer_state, latest_checkpoint, load_checkpoint, save_checkpoint,
                         split_optimizer_state)
from .ema import EMA
from . import distributed
from .guard import ACTION_RANK, Event, StabilityGuard
from .logging import JsonlLog, TensorBoard
from .lookahead import lookahead_step
from .optimism import optimistic_step, params_before_step
from .schedule import lr_factor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RecipeError("train.device=mps but this machine has no Apple MPS device; use train.device=auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise RecipeError(f"train.device={name!r} is not a device torch knows; use auto, cpu, cuda or mps") from None


def make_optimizer(params: list, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The phase's optimizer, with torch's multi-tensor (foreach) update on every device: torch
    picks it by itself on CUDA only, and on CPU the per-parameter loop costs a small net's step
    more than the arithmetic (benchmarks/step_cost.py)."""
    kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "foreach": True}
    if cfg.name == "adam":
        return torch.optim.Adam(params, betas=cfg.betas, eps=cfg.eps, **kw)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, betas=cfg.betas, eps=cfg.eps, **kw)
    if cfg.name == "nadam":  # Dozat 2016: Adam with Nesterov momentum (torch's momentum warm-up schedule)
        return torch.optim.NAdam(params, betas=cfg.betas, eps=cfg.eps, **kw)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, momentum=cfg.momentum, **kw)
    return torch.optim.RMSprop(params, momentum=cfg.momentum, eps=cfg.eps, **kw)


class Trainer:
    def __init__(self, method: Method, data: Dataset, recipe: Recipe, run_dir: Path, *, rank: int = 0, world: int = 1,
                 on_eval=None):
        self.method, self.data, self.recipe, self.run_dir = method, data, recipe, Path(run_dir)
        self.rank, self.world, self.is_main = rank, world, rank == 0
        self.on_eval = on_eval  # callable(step, results) after each periodic eval
        tc = recipe.train
        self.device = method.device
        self.phases = method.phases()
        missing = [p.name for p in self.phases if p.name not in recipe.optim]
        if missing:
            raise RecipeError(f"the recipe has no optim.{missing[0]} section; this method's phases are "
                              f"{', '.join(p.name for p in self.phases)}")
        self.optims = {p.name: make_optimizer(p.params, recipe.optim[p.name]) for p in self.phases}
        scaled = tc.precision == "fp16" and tc.grad_scaler
        unscaled = tc.precision == "fp16" and not tc.grad_scaler
        self.guard = StabilityGuard(recipe.guard, uses_scaler=scaled, nonfinite_hint=(
            "fp16 without loss scaling overflows and underflows: train.grad_scaler=true or train.precision=bf16"
            if unscaled else ""))
        self.scheds = {
            p.name: torch.optim.lr_scheduler.LambdaLR(
                self.optims[p.name], lr_factor(recipe.optim[p.name], tc.steps, lambda: self.guard.lr_scale))
            for p in self.phases
        }
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scaled)
        self.ema = EMA.of(method, tc.ema, tc.ema_start, tc.ema_warmup) if tc.ema > 0 else None
        self.loader = InfiniteLoader(data, recipe.data.batch_size, tc.seed, self.device, rank, world)
        self.step = 0
        self.snapshot: dict | None = None
        self.snapshot_due = False  # a snapshot is due and waits for a step with no detector part-way
        self.started = time.time()
        self.elapsed_before = 0.0
        self.last: dict[str, Tensor] = {}
        self.peaks: dict[str, Tensor] = {}  # loss and gradient-norm maxima since the last log line
        self.real_diversity: float | None = None
        self.class_reader = None  # (reader, classes) of metrics/coverage.py, False when there is none
        self.quality_reader = None  # the high-quality share of samples, where it can be read
        self.status = "running"
        self.message = ""
        self.last_eval: dict[str, float] | None = None
        self.eval_data = None  # (reference Dataset, EvalSplit) of evaluations, loaded at the first one

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> str:
        """Train to train.steps (or to `stop_at`, as if interrupted there). Returns the status."""
        tc = self.recipe.train
        self.status, self.message = "running", ""
        self._open_logs()
        if self.step == 0:
            self.method.data_init(self.loader.next())
            if self.world > 1:  # each rank initialised from its own slice: rank 0's wins
                distributed.broadcast_state(self.method)
            if self.ema is not None:  # start the average from the data-initialised weights
                self.ema.reset()
            self._take_snapshot()
        bar = self._progress()
        interrupted, restore_sigterm = _catch_sigterm()
        try:
            while self.step < tc.steps:
                if stop_at is not None and self.step >= stop_at or interrupted():
                    self.status = "interrupted"
                    break
                self._train_step(self.step)
                action = self._act()
                if action is None:
                    self.step += 1
                    if self._periodic(self.step):  # a check ran: act on its verdict before the next step
                        action = self._act()
                if action == "stop":
                    break
                if action is None and bar is not None:
                    bar.update(self.step - bar.n)
        except KeyboardInterrupt:
            self.status = "interrupted"
        except BaseException:
            self._close_logs()  # e.g. a pruned tuning trial: the logs stay whole
            raise
        finally:
            restore_sigterm()
            if bar is not None:
                bar.close()
        if self.status == "running":
            self.status = "finished"
        self._finish()
        return self.status

    def _train_step(self, step: int) -> None:
        for phase in self.phases:
            opt, ocfg = self.optims[phase.name], self.recipe.optim[phase.name]
            for _ in range(phase.repeats):
                batch = self.loader.next()
                # a parametrized weight (weight or spectral norm) is computed once per phase, however
                # often the loss uses its net (a critic on real and on fake data)
                with self._autocast(), parametrize.cached():
                    loss, logs = phase.loss(batch, step)
                    loss = loss.float().mean()
                opt.zero_grad(set_to_none=True)
                # only this phase's leaves (a GAN's G phase does not fill D's gradients), read each
                # step so that a parameter frozen mid-run is left out
                self.scaler.scale(loss).backward(inputs=[p for p in phase.params if p.requires_grad])
                if self.world > 1:
                    loss = distributed.average_gradients(phase.params, loss)
                self.scaler.unscale_(opt)
                grads = [p.grad for p in phase.params if p.grad is not None]
                norm = (torch.nn.utils.clip_grad_norm_(phase.params, ocfg.clip, foreach=True) if ocfg.clip
                        else torch.nn.utils.get_total_norm(grads, foreach=True) if grads else torch.zeros((), device=self.device))
                if self.guard.allow_update(step, phase.name, loss, norm, self._weights_finite):
                    before = params_before_step(phase.params) if ocfg.optimism else None
                    self.scaler.step(opt)
                    if before is not None:
                        optimistic_step(opt, phase.params, before, may_skip=self.scaler.is_enabled())
                    if ocfg.lookahead:
                        lookahead_step(opt, ocfg.lookahead, ocfg.lookahead_alpha)
                self.scaler.update()
            self.scheds[phase.name].step()
            self.last[f"loss/{phase.name}"] = loss.detach()
            self.last[f"grad_norm/{phase.name}"] = norm.detach()
            for key in (f"loss/{phase.name}", f"grad_norm/{phase.name}"):  # a spike between two log lines
                value, peak = self.last[key].float(), self.peaks.get(key)  # (maximum keeps a NaN: it shows too)
                self.peaks[key] = value if peak is None else torch.maximum(peak, value)
            self.last.update({f"{phase.name}/{k}": v for k, v in logs.items()})
        self.method.on_step_end(step, self.last)
        if self.ema is not None:
            self.ema.update(step)

    def _act(self) -> str | None:
        """Carry out the guard's verdict, if any (rollback or stop), and write the new events;
        returns the action taken."""
        verdict = self._agreed(self.guard.take_verdict())
        if verdict is not None and verdict.action == "rollback":
            self._rollback(verdict)
        if verdict is not None and verdict.action == "stop":
            self.status, self.message = "stopped", verdict.message
        self._write_events()
        return None if verdict is None else verdict.action

    # ---- periodic work ----------------------------------------------------------------------
    def _periodic(self, step: int) -> bool:
        """The periodic work after `step` updates; True when the guard's health checks ran."""
        tc, gc = self.recipe.train, self.recipe.guard
        checked = gc.enabled and step % gc.check_every == 0
        if checked:
            health, ratio = self.method.health(), self._diversity_ratio(step)
            coverage, quality = self._mode_checks(step)
            if self.world > 1:
                both = distributed.mean_values({**health, "__ratio": -1.0 if ratio is None else ratio}, self.device)
                ratio = None if ratio is None else both.pop("__ratio")
                health = {k: v for k, v in both.items() if k != "__ratio"}
            self.guard.check_health(step, health, ratio, coverage, quality)
        if step % tc.log_every == 0 and self.is_main:
            self._log(step)
        if gc.enabled and step % gc.snapshot_every == 0:
            self.snapshot_due = True
        # due, and the state is a good one (finite weights: one host sync per snapshot)
        if gc.enabled and self.snapshot_due and self.guard.healthy() and self._weights_finite():
            self._take_snapshot()
        if tc.sample_every and step % tc.sample_every == 0 and self.is_main:
            self.save_samples(step)
        if self.recipe.eval.every and step % self.recipe.eval.every == 0 and self.is_main:
            self.evaluate_into_log(step)
        if tc.checkpoint_every and step % tc.checkpoint_every == 0 and self.is_main:
            self.save_checkpoint()
        return checked

    def _log(self, step: int) -> None:
        record = {"step": step, "time": round(self.elapsed(), 3)}
        logged = {**self.last, **{f"{k}.max": v for k, v in self.peaks.items()}}  # .max: since the last line
        values = torch.stack([v.float() for v in logged.values()]).tolist() if logged else []  # one host sync
        record.update(zip(logged.keys(), values))
        self.peaks = {}
        for name, sched in self.scheds.items():
            record[f"lr/{name}"] = sched.get_last_lr()[0]
        record.update({f"health/{k}": v for k, v in self.method.health().items()})
        if self.scaler.is_enabled():
            record["amp/scale"] = float(self.scaler.get_scale())
            record["amp/overflows"] = self.guard.overflows
        self.metrics_log.write(record)
        self.tb.scalars(step, {k: v for k, v in record.items() if k not in ("step", "time")})

    def _diversity_ratio(self, step: int) -> float | None:
        """Sample diversity / data diversity, for methods that sample in one forward pass."""
        if not self.method.fast_sampling or step < self.recipe.guard.collapse_after:
            return None
        from ..metrics.diversity import mean_pairwise_distance

        g = torch.Generator().manual_seed(1234)
        if self.real_diversity is None:
            idx = torch.randperm(len(self.data), generator=g)[:256]
            self.real_diversity = float(mean_pairwise_distance(self.data.as_float(idx).flatten(1)))
        fake = self.method.monitor_sample(256, generator=g)
        return float(mean_pairwise_distance(fake.flatten(1).float().cpu())) / max(self.real_diversity, 1e-12)

    def _mode_checks(self, step: int) -> tuple[float | None, float | None]:
        """(coverage, quality) of one batch of raw samples, for methods that sample in one
        forward pass on data whose classes can be read off a sample (the 2-D mixtures, digit
        images); None where not. Coverage is the share of the data's classes the generator keeps
        (metrics/coverage.py; 40 samples per class, so a kept class expects 40 and is lost under
        10); quality the share of high-quality samples, where a sample's quality can be read (the
        2-D mixtures). Every rank draws the same latents from the same weights, so every rank
        reaches the same verdict."""
        if not self.method.fast_sampling or step < self.recipe.guard.collapse_after:
            return None, None
        if self.class_reader is None:
            from ..metrics.coverage import class_reader, quality_reader

            shape = tuple(self.data.x.shape[1:])
            self.class_reader = class_reader(self.recipe.data.name, shape) or False
            self.quality_reader = quality_reader(self.recipe.data.name, shape)
        if not self.class_reader:
            return None, None
        from ..metrics.coverage import kept_share

        read, num_classes = self.class_reader
        with torch.no_grad():
            fake = self.method.monitor_sample(40 * num_classes, generator=torch.Generator().manual_seed(4321)).float()
            quality = self.quality_reader(fake.cpu()) if self.quality_reader is not None else None
            return kept_share(read(fake), num_classes), quality

    def save_samples(self, step: int | str) -> Path:
        from ..report.grid import save_samples_png

        n = 2000 if self.data.info.kind == "vector" else self.recipe.train.sample_n
        with self.ema.swapped() if self.ema is not None else nullcontext():
            x = self.method.sample(n, generator=torch.Generator().manual_seed(0))
        name = f"step-{step:06d}" if isinstance(step, int) else step
        ref = self.data.x[:2000] if self.data.info.kind == "vector" else None
        return save_samples_png(x, self.run_dir / "samples" / f"{name}.png", ref, f"step {step}")

    def evaluate_into_log(self, step: int) -> dict[str, float]:
        """The recipe's eval metrics against the held-out split (eval.split), into metrics.jsonl."""
        from ..data import load_eval_data
        from ..evaluation import evaluate_method

        cfg = self.recipe.eval
        if self.eval_data is None:  # (reference Dataset, EvalSplit), loaded at the first eval
            self.eval_data = load_eval_data(self.data, self.recipe.data, cfg.split)
        results = evaluate_method(self.method, self.eval_data[0], cfg, ema=self.ema if cfg.ema else None)
        self.metrics_log.write({"step": step, "time": round(self.elapsed(), 3),
                                **{f"eval/{k}": v for k, v in results.items()}})
        self.last_eval = results
        if self.on_eval is not None:
            self.on_eval(step, results)
        return results

    def _final_eval(self) -> None:
        """The recipe's eval metrics at the end of the run: metrics.jsonl and eval.json."""
        from ..data import resolve_eval_split
        from ..evaluation import eval_record
        from .checkpoint import atomic_write_text

        cfg = self.recipe.eval
        if not cfg.metrics:
            return
        done = cfg.every and self.step % cfg.every == 0  # the periodic eval of this step already ran
        results = self.last_eval if done and self.last_eval is not None else self.evaluate_into_log(self.step)
        record = eval_record(results, split=resolve_eval_split(self.recipe.data, cfg.split), n=cfg.n,
                             features=cfg.features, ema=self.ema is not None and cfg.ema, step=self.step)
        atomic_write_text(self.run_dir / "eval.json", json.dumps(record, indent=1))

    def _agreed(self, verdict: Event | None) -> Event | None:
        """Across ranks the strongest verdict wins, so every rank rolls back or stops together."""
        if self.world == 1:
            return verdict
        mine = ACTION_RANK[verdict.action] if verdict is not None else 0
        agreed = distributed.agree(mine, self.device)
        if agreed == mine:
            return verdict
        action = {2: "rollback", 3: "stop"}[agreed]
        event = Event(self.step, "peer", action, f"another rank asked to {action}")
        self.guard.record(event)
        return event

    # ---- snapshots and rollback ---------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "method": self.method.state_dict(),
            "optims": {k: o.state_dict() for k, o in self.optims.items()},
            "scheds": {k: s.state_dict() for k, s in self.scheds.items()},
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "loader": self.loader.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "step": self.step,
        }

    def _load_state(self, s: dict) -> None:
        self.method.load_state_dict(s["method"])
        for k, o in self.optims.items():
            o.load_state_dict(s["optims"][k])
        for k, sch in self.scheds.items():
            sch.load_state_dict(s["scheds"][k])
        if s["scaler"]:
            self.scaler.load_state_dict(s["scaler"])
        if self.ema is not None and s["ema"]:
            self.ema.load_state_dict(s["ema"])
        self.loader.load_state_dict(s["loader"])
        torch.set_rng_state(s["rng"])
        if s["cuda_rng"]:
            torch.cuda.set_rng_state_all(s["cuda_rng"])
        self.step = int(s["step"])

    def _weights_finite(self) -> bool:
        """Every floating-point weight and buffer of the method is finite (one host sync)."""
        ts = [t for t in self.method.state_dict().values() if t.is_floating_point()]
        return bool(torch.stack([torch.isfinite(t).all() for t in ts]).all()) if ts else True

    def _take_snapshot(self) -> None:
        self.snapshot = {**copy.deepcopy(self._state()), "reg_scale": self.guard.reg_scale}
        self.snapshot_due = False
        self.guard.on_snapshot()

    def _rollback(self, verdict: Event) -> None:
        """Back to the last good snapshot, with a lower learning rate (and, where the method
        has them, stronger GP / R1); the data stream moves on so a bad batch is not replayed.
        Where it went and what changed is added to the verdict's evidence."""
        assert self.snapshot is not None
        loader_state = self.loader.state_dict()
        self._load_state(copy.deepcopy(self.snapshot))
        self.loader.load_state_dict(loader_state)
        self.snapshot_due = False  # the state is the snapshot's again
        self.guard.on_rollback()
        # the snapshot holds the weights of its time; the boosts of every rollback since apply on top
        boosted = self.method.regularization_boost(self.guard.reg_scale / self.snapshot["reg_scale"])
        for sched in self.scheds.values():  # re-apply the schedule with the new guard scale
            for group, base, lam in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
                group["lr"] = base * lam(sched.last_epoch)
        verdict.evidence.update({"to_step": self.step, "lr_scale": self.guard.lr_scale,
                                 **({"reg_scale": self.guard.reg_scale} if boosted else {})})
        verdict.message += (f"; rolled back to step {self.step}, learning rate x {self.guard.lr_scale:g}"
                            + (f", GP / R1 weight x {self.guard.reg_scale:g}" if boosted else ""))

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        s = self._state()
        tensors = {f"model.{k}": v for k, v in s["method"].items()}
        tensors.update({f"ema.{k}": v for k, v in s["ema"].items()})
        meta_optims = {}
        for name, state in s["optims"].items():
            t, m = split_optimizer_state(f"optim.{name}", state)
            tensors.update(t)
            meta_optims[name] = m
        tensors["rng.torch"] = s["rng"]
        for i, r in enumerate(s["cuda_rng"]):
            tensors[f"rng.cuda.{i}"] = r
        tensors["loader.generator"] = s["loader"]["generator"]
        tensors["loader.order"] = s["loader"]["order"]
        meta = {"step": self.step, "optims": meta_optims, "scheds": s["scheds"], "scaler": s["scaler"],
                "loader": {"pos": s["loader"]["pos"], "epoch": s["loader"]["epoch"]},
                "guard": self.guard.state_dict(), "elapsed": self.elapsed(), "has_ema": self.ema is not None}
        return save_checkpoint(self.run_dir / "checkpoints", self.step, tensors, meta,
                               self.recipe.train.keep_checkpoints)

    def resume(self, path: Path | None = None) -> int:
        """Load the newest (or given) checkpoint; returns the step it continues from."""
        path = path or latest_checkpoint(self.run_dir / "checkpoints")
        tensors, meta = load_checkpoint(path)
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        s = {
            "method": model,
            "optims": {k: join_optimizer_state(f"optim.{k}", tensors, m) for k, m in meta["optims"].items()},
            "scheds": meta["scheds"], "scaler": meta["scaler"],
            "ema": {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")},
            "loader": {"generator": tensors["loader.generator"], "order": tensors["loader.order"], **meta["loader"]},
            "rng": tensors["rng.torch"],
            "cuda_rng": [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
            if torch.cuda.is_available() else [],
            "step": meta["step"],
        }
        try:
            self._load_state(s)
        except (RuntimeError, KeyError, ValueError) as e:
            raise RecipeError(f"checkpoint {path} does not fit this recipe's model ({e})") from None
        self.guard.load_state_dict(meta["guard"])
        self.elapsed_before = float(meta.get("elapsed", 0.0))
        if self.is_main:  # the other ranks never write the logs
            for log in ("metrics.jsonl", "events.jsonl"):
                JsonlLog.truncate(self.run_dir / log, self.step)
        self._take_snapshot()
        return self.step

    # ---- bookkeeping ------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def _autocast(self):
        p = self.recipe.train.precision
        if p == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if p == "bf16" else torch.float16)

    def _open_logs(self) -> None:
        if not self.is_main:
            return
        self.metrics_log = JsonlLog(self.run_dir / "metrics.jsonl")
        self.events_log = JsonlLog(self.run_dir / "events.jsonl")
        self.tb = TensorBoard(self.run_dir / "tb")

    def _write_events(self) -> None:
        for e in self.guard.drain():
            if self.is_main:
                self.events_log.write({**e.to_json(), "time": round(self.elapsed(), 3)})

    def _progress(self):
        if not (self.recipe.train.progress and self.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.recipe.train.steps, initial=self.step, desc=self.recipe.name,
                    unit="step", dynamic_ncols=True, mininterval=1.0)

    def _stages_bar(self, total: int, first: str):
        """A bar over the end-of-run work (final samples, final eval), which can take minutes."""
        if not (self.recipe.train.progress and self.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=first, unit="stage", dynamic_ncols=True, mininterval=0.0,
                    bar_format="{desc} ({n}/{total} done, {elapsed})")

    def _finish(self) -> None:
        if not self.is_main:
            return
        self.save_checkpoint()
        problems = []
        if self.status != "interrupted":
            stages = [("final samples", lambda: self.save_samples("final"))]
            if self.recipe.eval.metrics:
                stages.append(("final eval", self._final_eval))
            bar = self._stages_bar(len(stages), stages[0][0])
            for what, work in stages:
                if bar is not None:
                    bar.set_description_str(what)
                try:
                    work()
                except (ValueError, RuntimeError) as e:  # e.g. non-finite samples after a guard stop
                    problems.append(f"{what} failed: {e}")
                if bar is not None:
                    bar.update()
            if bar is not None:
                bar.close()
        summary = {"status": self.status, "steps": self.step, "wall_time": round(self.elapsed(), 2),
                   "events": self.guard.summary(), "rollbacks": self.guard.rollbacks, "message": self.message,
                   "capabilities": [c for c in ("log_prob", "reconstruct", "health") if has_capability(self.method, c)],
                   "problems": problems}
        from .checkpoint import atomic_write_text

        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=1))
        self._close_logs()

    def _close_logs(self) -> None:
        if self.is_main and hasattr(self, "metrics_log"):
            self.metrics_log.close()
            self.events_log.close()
            self.tb.close()


def _catch_sigterm():
    """SIGTERM (a scheduler's pre-emption) ends the run cleanly with a checkpoint."""
    flag = {"hit": False}
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: flag.__setitem__("hit", True))
    except ValueError:  # not the main thread
        return (lambda: False), (lambda: None)
    return (lambda: flag["hit"]), (lambda: signal.signal(signal.SIGTERM, previous))
