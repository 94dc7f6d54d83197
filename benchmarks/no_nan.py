"""No NaN in the likelihood recipes, over seeds and in fp32 and bf16 (issue 5, "Goals").

For each recipe (vae-digits, betavae-digits, seqvae-sines, realnvp-moons, glow-digits,
pixelcnn-digits), each seed (0-4) and each precision (fp32; bf16 = CPU autocast,
train.precision=bf16), one run through the public API `stablegen.train` with one thread and
the StabilityGuard at the recipe's settings, then four checks:

  finite_logs      every loss/* and grad_norm/* value in metrics.jsonl is finite
  finite_weights   every parameter (and floating buffer) of run.method is finite at the end
  finite_samples   run.sample(64, seed=S) is finite (a rare bad draw, < 1 %, may go unseen)
  nonfinite_events the guard's `nonfinite` events in events.jsonl: a step whose loss or gradient
                   was not finite, whether the guard skipped it, rolled back or stopped. A run the
                   guard rescued still counts here: the goal is no NaN at all, not survival.

A run has "no NaN" when all four hold (zero nonfinite events) and it finished. Every guard
event is also counted by detector and action (loss spikes, posterior-collapse warnings, ...).
Periodic samples, evals and checkpoints are turned off (the final checkpoint and sample grid
stay): they run in fp32 outside the training step and only cost time.

    OMP_NUM_THREADS=1 python benchmarks/no_nan.py --max-steps 400
    OMP_NUM_THREADS=1 python benchmarks/no_nan.py --recipes glow-digits --seeds 0 --precisions bf16

--steps N trains every recipe N steps (default: the recipe's own train.steps); --max-steps caps
that. Writes benchmarks/results/no_nan.json (settings, machine, one row per run) and prints a
markdown table (recipe x precision: runs with no NaN, guard events).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

import stablegen as sg
from stablegen.report.runs import read_jsonl  # the run logs' one reader
from diffusion import machine  # the benchmarks' one description of the machine

RESULTS = Path(__file__).parent / "results" / "no_nan.json"
RECIPES = ("vae-digits", "betavae-digits", "seqvae-sines", "realnvp-moons", "glow-digits", "pixelcnn-digits")
PRECISIONS = ("fp32", "bf16")
SAMPLES = 64  # samples drawn after training for the finiteness check


def is_finite_number(v) -> bool:
    return not isinstance(v, (int, float)) or isinstance(v, bool) or math.isfinite(v)


def check_logs(records: list[dict]) -> tuple[bool, list[str]]:
    """(all loss/* and grad_norm/* values finite, the other keys that ever held a non-finite value)."""
    bad = {key for record in records for key, value in record.items() if not is_finite_number(value)}
    watched = {key for key in bad if key.startswith(("loss/", "grad_norm/"))}
    return not watched, sorted(bad - watched)


def finite_tensors(method: torch.nn.Module) -> bool:
    """Every parameter and floating buffer finite."""
    tensors = list(method.parameters()) + [b for b in method.buffers() if b.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def plain(value):
    """JSON-safe: non-finite floats become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def run_one(recipe: str, precision: str, seed: int, steps: int) -> dict:
    """Train one recipe at one precision and seed in a temporary directory; the row of the table."""
    overrides = {"train.seed": seed, "train.precision": precision, "train.steps": steps, "train.threads": 1,
                 "train.progress": False, "train.sample_every": 0, "train.checkpoint_every": 0,
                 "eval.every": 0, "eval.metrics": []}
    run_dir = Path(tempfile.mkdtemp(prefix=f"sg-nonan-{recipe}-"))
    try:
        t0 = time.perf_counter()
        run = sg.train(recipe, overrides, run_dir=run_dir / "run", report=False)
        seconds = time.perf_counter() - t0
        finite_logs, other_nonfinite = check_logs(read_jsonl(run.run_dir / "metrics.jsonl"))
        events = read_jsonl(run.run_dir / "events.jsonl")
        summary = json.loads((run.run_dir / "summary.json").read_text())
        with torch.no_grad():
            samples = run.sample(SAMPLES, seed=seed)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    nonfinite = [e for e in events if e["detector"] == "nonfinite"]
    return {
        "recipe": recipe, "precision": precision, "seed": seed, "steps": summary["steps"],
        "seconds": round(seconds, 1), "status": summary["status"], "rollbacks": summary["rollbacks"],
        "finite_logs": finite_logs, "finite_weights": finite_tensors(run.method),
        "finite_samples": bool(torch.isfinite(samples).all()), "nonfinite_events": len(nonfinite),
        "events": dict(Counter(f"{e['detector']}:{e['action']}" for e in events)),
        "other_nonfinite_logs": other_nonfinite, "problems": summary["problems"],
        "first_nonfinite": [plain({k: e[k] for k in ("step", "action", "message", "evidence")})
                            for e in nonfinite[:3]],
    }


def no_nan(row: dict) -> bool:
    return (row["finite_logs"] and row["finite_weights"] and row["finite_samples"]
            and row["nonfinite_events"] == 0 and row["status"] == "finished")


def markdown(rows: list[dict]) -> str:
    lines = ["| recipe | precision | steps | runs with no NaN | non-finite steps | guard events (all runs) | s / run |",
             "|---|---|---:|---:|---:|---|---:|"]
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        for precision in dict.fromkeys(r["precision"] for r in rows):
            cell = [r for r in rows if r["recipe"] == recipe and r["precision"] == precision]
            if not cell:
                continue
            events = sum((Counter(r["events"]) for r in cell), Counter())
            shown = ", ".join(f"{k} x{v}" for k, v in sorted(events.items())) or "none"
            lines.append(f"| {recipe} | {precision} | {cell[0]['steps']} | {sum(map(no_nan, cell))} / {len(cell)} | "
                         f"{sum(r['nonfinite_events'] for r in cell)} | {shown} | "
                         f"{sum(r['seconds'] for r in cell) / len(cell):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="fp32, bf16 or both")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: each recipe's own)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on the training steps of every run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    recipes, precisions = args.recipes.split(","), args.precisions.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for recipe in recipes:
        steps = args.steps or sg.load_recipe(recipe).train.steps
        steps = min(steps, args.max_steps) if args.max_steps else steps
        for precision in precisions:
            for seed in seeds:
                row = run_one(recipe, precision, seed, steps)
                rows.append(row)
                print(f"{recipe} {precision} seed {seed}: {row['steps']} steps, {row['seconds']} s, "
                      f"{'no NaN' if no_nan(row) else 'NaN'}, events {row['events']}", flush=True)
    result = {"settings": {"recipes": recipes, "seeds": seeds, "precisions": precisions, "steps": args.steps,
                           "max_steps": args.max_steps, "threads": 1, "samples": SAMPLES,
                           "bf16": "torch.autocast('cpu', dtype=torch.bfloat16) around each loss"},
              "machine": f"{machine()}, torch {torch.__version__}, python {platform.python_version()}",
              "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
