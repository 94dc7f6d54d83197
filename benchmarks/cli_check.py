"""The foundation check as a user runs it: `stablegen train RECIPE train.seed=S --run-dir R` then
`stablegen sample R -n 2500 -o x.npy`, one run at a time, each timed; the mixture metrics of
BENCHMARKS.md ("Stability on 2-D mixtures") on every x.npy.

    python benchmarks/cli_check.py gan-grid25 --seeds 0,1,2,3,4 --threads 2

Writes one JSON line per seed to benchmarks/results/<recipe>-cli-<threads>threads.jsonl and prints
a markdown table. Run directories go to a temporary directory and are deleted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stablegen.data.toys import mixture_means
from stablegen.metrics.mixtures import mixture_metrics
from stablegen.recipe import load_recipe

RESULTS = Path(__file__).parent / "results"


def check(recipe: str, seed: int, threads: int, workdir: Path) -> dict:
    run_dir, out = workdir / f"{recipe}-{seed}", workdir / f"{recipe}-{seed}.npy"
    t0 = time.time()
    subprocess.run(["stablegen", "train", recipe, f"train.seed={seed}", f"train.threads={threads}",
                    "train.progress=false", "--run-dir", str(run_dir)], check=True, stdout=subprocess.DEVNULL)
    train_s = time.time() - t0
    subprocess.run(["stablegen", "sample", str(run_dir), "-n", "2500", "-o", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    summary = json.loads((run_dir / "summary.json").read_text())
    x = torch.from_numpy(np.load(out))  # (2500, 2)
    metrics = mixture_metrics(x, load_recipe(recipe).data.name)
    return {"seed": seed, **metrics, "command_s": round(train_s, 1),
            "training_s": summary["wall_time"], "rollbacks": summary["rollbacks"],
            "status": summary["status"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipe", help="a 2-D mixture recipe: gan-ring8, gan-grid25, ...")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma list of train.seed values")
    p.add_argument("--threads", type=int, default=2, help="train.threads of each run")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON lines file (default: benchmarks/results/<recipe>-cli-<threads>threads.jsonl)")
    args = p.parse_args()
    out = args.out or RESULTS / f"{args.recipe.removeprefix('gan-')}-cli-{args.threads}threads.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sg-cli-check-"))
    rows = []
    try:
        with out.open("w") as f:
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append(check(args.recipe, seed, args.threads, workdir))
                f.write(json.dumps(rows[-1]) + "\n")
                f.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    modes = len(mixture_means(load_recipe(args.recipe).data.name))
    print(f"wrote {out}\n\n| seed | modes | %HQ | reverse KL | `stablegen train` wall s | guard rollbacks |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['modes']:.0f}/{modes} | {100 * r['hq']:.1f} | {r['reverse_kl']:.3f} | "
              f"{r['command_s']:.0f} | {r['rollbacks']} |")


if __name__ == "__main__":
    main()
