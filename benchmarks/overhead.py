"""Trainer overhead: the same DCGAN training step in stablegen's Trainer and in a plain
hand-written PyTorch loop, alternating in one process; median step-time ratio.

    python benchmarks/overhead.py [--steps 50] [--rounds 11] [--threads 2]
    python benchmarks/overhead.py --switches [--steps 50] [--rounds 11] [--threads 1]

Both sides train the dcgan-digits nets (hinge loss, Adam, batch 64). The Trainer side runs
its whole step: the guard's checks (one host sync per phase), gradient-norm measurement, EMA,
the scheduler and the periodic log line; sample grids and checkpoints are off (they are I/O
at fixed intervals, not per-step cost). Writes benchmarks/results/overhead.json.

--switches prices the optimizer switches instead: the gan-ring8 step in the Trainer with plain
Adam, with optimistic steps, with Lookahead and with both on each player, alternating in one
process; median step time of each and its ratio to plain Adam (results/overhead-switches.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from stablegen.api import build_method, seed_everything
from stablegen.data import load_dataset
from stablegen.recipe import load_recipe
from stablegen.train.loop import Trainer


def plain_loop(G, D, x, batch, z_dim, steps, opt_g, opt_d, gen):
    """A careful hand-written loop: no graph for the critic's fakes, and the generator's backward
    fills only G's gradients (as the trainer does), so the ratio measures overhead alone."""
    g_params = list(G.parameters())
    for _ in range(steps):
        real = x[torch.randint(len(x), (batch,), generator=gen)]
        with torch.no_grad():
            fake = G(torch.randn(batch, z_dim))
        loss_d = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        real = x[torch.randint(len(x), (batch,), generator=gen)]  # the trainer draws a batch per phase too
        loss_g = -D(G(torch.randn(batch, z_dim))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward(inputs=g_params)
        opt_g.step()


def stepper(trainer: Trainer):
    """Run n whole trainer steps (the step, the guard's verdict, events, periodic work)."""
    step = 0

    def run(n: int) -> None:
        nonlocal step
        for _ in range(n):
            trainer._train_step(step)
            trainer.guard.take_verdict()
            trainer._write_events()
            step += 1
            trainer._periodic(step)

    return run


SWITCHES = {  # optimizer switches of gan-ring8, on both players
    "Adam": {"optimism": False, "lookahead": 0},
    "Adam + optimism": {"optimism": True, "lookahead": 0},
    "Adam + Lookahead": {"optimism": False, "lookahead": 5},
    "Adam + optimism + Lookahead (gan-ring8)": {"optimism": True, "lookahead": 5},
}


def switch_costs(args) -> None:
    base = {"train.steps": 10**9, "train.sample_every": 0, "train.checkpoint_every": 0,
            "train.progress": False, "train.deterministic": False}
    times: dict[str, list[float]] = {name: [] for name in SWITCHES}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for i, (name, sw) in enumerate(SWITCHES.items()):
            recipe = load_recipe("gan-ring8", {**base, **{f"optim.{ph}.{k}": v for ph in ("d", "g") for k, v in sw.items()}})
            seed_everything(0, False)
            data = load_dataset(recipe.data)
            trainer = Trainer(build_method(recipe, data), data, recipe, Path(tmp) / str(i))
            trainer._open_logs()
            runs[name] = stepper(trainer)
            runs[name](10)  # warm-up
        names = list(runs)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:  # each variant in each position
                run = runs[name]
                t0 = time.perf_counter()
                run(args.steps)
                times[name].append((time.perf_counter() - t0) / args.steps)
    plain = statistics.median(times["Adam"])
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
              "steps_per_chunk": args.steps, "rounds": args.rounds,
              "median_step_ms": {n: 1e3 * statistics.median(t) for n, t in times.items()},
              "ratio_to_adam": {n: statistics.median(t) / plain for n, t in times.items()},
              "median_round_ratio_to_adam": {n: statistics.median(a / b for a, b in zip(t, times["Adam"]))
                                             for n, t in times.items()}}
    out = Path(__file__).parent / "results" / "overhead-switches.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print("| gan-ring8 step | median step (ms) | ratio of medians to Adam | median per-round ratio |\n|---|---|---|---|")
    for n in SWITCHES:
        print(f"| {n} | {result['median_step_ms'][n]:.2f} | {result['ratio_to_adam'][n]:.3f} "
              f"| {result['median_round_ratio_to_adam'][n]:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50, help="steps per timed chunk")
    ap.add_argument("--rounds", type=int, default=11, help="alternating chunks per side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--switches", action="store_true", help="price the optimizer switches on gan-ring8")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.switches:
        return switch_costs(args)

    recipe = load_recipe("dcgan-digits", {"train.steps": 10**9, "train.sample_every": 0, "train.checkpoint_every": 0,
                                           "train.progress": False, "train.deterministic": False})
    seed_everything(0, False)
    data = load_dataset(recipe.data)
    method = build_method(recipe, data)
    G, D = copy.deepcopy(method.G), copy.deepcopy(method.D)
    # the multi-tensor update, as the trainer's optimizers (train/loop.py make_optimizer)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=True)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=True)
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(method, data, recipe, Path(tmp))
        trainer._open_logs()
        run_trainer = stepper(trainer)
        run_trainer(10)  # warm-up both sides
        plain_loop(G, D, data.x, 64, recipe.model.z_dim, 10, opt_g, opt_d, gen)
        t_sg, t_plain = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            plain_loop(G, D, data.x, 64, recipe.model.z_dim, args.steps, opt_g, opt_d, gen)
            t_plain.append((time.perf_counter() - t0) / args.steps)
            t0 = time.perf_counter()
            run_trainer(args.steps)
            t_sg.append((time.perf_counter() - t0) / args.steps)
    ratios = [a / b for a, b in zip(t_sg, t_plain)]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "steps_per_chunk": args.steps, "rounds": args.rounds,
        "median_step_ms_stablegen": 1e3 * statistics.median(t_sg),
        "median_step_ms_plain": 1e3 * statistics.median(t_plain),
        "median_ratio": statistics.median(ratios),
        "ratio_of_medians": statistics.median(t_sg) / statistics.median(t_plain),
    }
    out = Path(__file__).parent / "results" / "overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print("| side | median step (ms) |\n|---|---|")
    print(f"| plain PyTorch loop | {result['median_step_ms_plain']:.2f} |")
    print(f"| stablegen Trainer | {result['median_step_ms_stablegen']:.2f} |")
    print(f"\nmedian ratio (per round): {result['median_ratio']:.3f}; ratio of medians: {result['ratio_of_medians']:.3f}")


if __name__ == "__main__":
    main()
