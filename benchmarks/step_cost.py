"""What a recipe variant costs per step: the built-in recipe and variants given as overrides,
each trained for a few hundred steps through `stablegen.train`, alternating in one process;
median milliseconds per step (the trainer's wall time in summary.json, as
`cli_check.py`'s training time) and the ratio to the recipe.

    python benchmarks/step_cost.py gan-grid25 --threads 1 --set b128:data.batch_size=128
    python benchmarks/step_cost.py gan-grid25 --threads 2 --set b128:data.batch_size=128

`--set NAME:KEY=VALUE` (repeatable; several KEY=VALUE for one NAME are joined) names a variant.
Sample grids and checkpoints are off. Writes benchmarks/results/step-cost-<recipe>-<threads>threads.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch

import stablegen as sg
from stablegen.recipe import parse_overrides

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--set", action="append", default=[], metavar="NAME:KEY=VALUE")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    variants: dict[str, list[str]] = {"recipe": []}
    for item in args.set:
        name, sep, override = item.partition(":")
        if not sep:
            p.error(f"--set {item!r}: expected NAME:KEY=VALUE")
        variants.setdefault(name, []).append(override)
    torch.set_num_threads(args.threads)
    ms: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, overrides in variants.items():
            ov = {"train.steps": args.steps, "train.progress": False, "train.sample_every": 0,
                  "train.checkpoint_every": 0, "train.threads": args.threads, **parse_overrides(overrides)}
            with tempfile.TemporaryDirectory() as run_dir:
                sg.train(args.recipe, ov, run_dir=Path(run_dir) / "r", report=False)
                t = json.loads((Path(run_dir) / "r" / "summary.json").read_text())["wall_time"]
            ms[name].append(1000 * t / args.steps)
    base = statistics.median(ms["recipe"])
    rows = {name: {"ms_per_step": round(statistics.median(v), 2), "ratio": round(statistics.median(v) / base, 3),
                   "overrides": variants[name]} for name, v in ms.items()}
    print("| variant | ms / step | ratio to the recipe |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} {' '.join(r['overrides'])} | {r['ms_per_step']} | {r['ratio']} |")
    out = RESULTS / f"step-cost-{args.recipe}-{args.threads}threads.json"
    out.write_text(json.dumps({"args": vars(args), "machine": {"platform": platform.platform(),
                                                               "torch": torch.__version__}, "variants": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
