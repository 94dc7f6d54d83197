"""Sample quality against sampling steps: DDPM (ancestral) vs DDIM (eta = 0) on the digits.

The curve of Song et al. 2021 ("Denoising Diffusion Implicit Models", Table 1, CIFAR-10):
one trained model, sampled with 10, 20, 50, 100 and 1000 steps by both samplers, scored
by the Fréchet distance in the feature space of the digits classifier (BENCHMARKS.md,
"Image quality on digits"). Every configuration starts from the same noise (seeds 0, 1, ...
per chunk), so differences come from the samplers, not the draw. The goal is DDIM-50 within
10 % of DDPM-1000. `--extra` adds single configurations (DDIM with eta > 0, EDM Heun) to
separate the discretization error from the gap between the deterministic (ODE) and the
stochastic sampler; the FID of real digits against themselves gives the floor at this n.

    python benchmarks/diffusion.py                         # trains ddpm-digits, then samples
    python benchmarks/diffusion.py --run runs/ddpm-digits  # reuse a trained run
    python benchmarks/diffusion.py --n 2000 --steps 10,20,50,100,1000 --extra ddim:eta=1@50,heun@25

Writes benchmarks/results/diffusion.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from stablegen.api import Run, open_run, train
from stablegen.data.digits import load_digits
from stablegen.metrics import evaluate

RESULTS = Path(__file__).parent / "results" / "diffusion.json"
EXTRA = "ddim:eta=0.5@50,ddim:eta=1@50,heun@25"


def machine() -> str:
    """Architecture, CPU model and core count, for the record."""
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), model)
    return f"{platform.machine()} {model}, {os.cpu_count()} cores".strip()


def parse_config(spec: str) -> dict:
    """'ddim:eta=0.5@50' -> {'sampler': 'ddim', 'eta': 0.5, 'steps': 50}."""
    head, _, steps = spec.partition("@")
    sampler, *options = head.split(":")
    kw: dict = {"sampler": sampler, "steps": int(steps)}
    for option in options:
        key, _, value = option.partition("=")
        kw[key] = float(value)
    return kw


def sample_in_chunks(run: Run, n: int, chunk: int, **kw) -> torch.Tensor:
    """n EMA samples, chunk k drawn with seed k (the same noise for every configuration)."""
    return torch.cat([run.sample(min(chunk, n - i), ema=True, seed=k, **kw)
                      for k, i in enumerate(range(0, n, chunk))])


def score(run: Run, real: torch.Tensor, n: int, chunk: int, **kw) -> dict:
    t0 = time.time()
    fake = sample_in_chunks(run, n, chunk, **kw)
    seconds = time.time() - t0
    s = evaluate(["fid", "kid", "prdc"], method=None, fake=fake, real=real, dataset="digits",
                 generator=torch.Generator().manual_seed(0))
    row = {**kw, "fid": s["fid"], "kid": s["kid"], "precision": s["precision"], "recall": s["recall"],
           "sample_seconds": round(seconds, 1)}
    print(json.dumps(row), flush=True)
    return row


def real_floor(real: torch.Tensor, n: int) -> float:
    """FID of n real digits (a seed-0 subset) against all of them: the floor of FID at this n."""
    subset = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:n]]
    return evaluate(["fid"], method=None, fake=subset, real=real, dataset="digits",
                    generator=torch.Generator().manual_seed(0))["fid"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a trained run directory to reuse (default: train ddpm-digits)")
    p.add_argument("--run-dir", default="runs/bench-ddpm-digits", help="where to train when --run is not given")
    p.add_argument("--recipe", default="ddpm-digits")
    p.add_argument("--train-steps", type=int, help="override train.steps of the recipe")
    p.add_argument("--n", type=int, default=1000, help="generated samples per configuration")
    p.add_argument("--steps", default="10,20,50,100,1000", help="comma-separated sampling steps")
    p.add_argument("--samplers", default="ddpm,ddim", help="comma-separated samplers of the grid")
    p.add_argument("--extra", default=EXTRA, help="extra configurations sampler[:key=value]@steps ('' for none)")
    p.add_argument("--chunk", type=int, default=500, help="samples per sampling call")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.time()
    if args.run:
        run = open_run(args.run)
        summary = run.run_dir / "summary.json"  # the trainer's wall time (training + final eval)
        train_seconds = json.loads(summary.read_text()).get("wall_time") if summary.is_file() else None
    else:
        overrides = {"train.progress": False}
        if args.train_steps:
            overrides["train.steps"] = args.train_steps
        run = train(args.recipe, overrides, run_dir=args.run_dir)
        train_seconds = round(time.time() - t0, 1)
    real, _ = load_digits()  # all 1,797 images as the reference set
    steps_list = [int(s) for s in args.steps.split(",") if s]
    samplers = [s for s in args.samplers.split(",") if s]

    rows = [score(run, real, args.n, args.chunk, sampler=sampler, steps=steps)
            for sampler in samplers for steps in steps_list]
    extra = [score(run, real, args.n, args.chunk, **parse_config(spec)) for spec in args.extra.split(",") if spec]

    def fid_of(sampler: str, steps: int) -> float | None:
        return next((r["fid"] for r in rows if r["sampler"] == sampler and r["steps"] == steps), None)

    ref, ddim50 = fid_of("ddpm", 1000), fid_of("ddim", 50)
    ratio = ddim50 / ref if ref and ddim50 is not None else None
    floor = real_floor(real, min(args.n, len(real)))
    result = {
        "benchmark": "diffusion: digits-classifier FID vs sampling steps, DDPM vs DDIM (eta 0)",
        "machine": machine(), "cpu_threads": args.threads, "torch": torch.__version__,
        "run": str(run.run_dir), "recipe": run.recipe.model_dump(mode="json"),
        "train_steps": run.recipe.train.steps, "train_seconds": train_seconds,
        "n_generated": args.n, "n_real": len(real), "features": "digits classifier (penultimate, 128-d)",
        "fid_real_floor": floor, "rows": rows, "extra": extra, "ddim50_over_ddpm1000": ratio,
        "goal_ddim50_within_10pct": None if ratio is None else ratio <= 1.10,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"\nDigits-classifier FID, {args.n} samples vs {len(real)} real digits "
          f"({run.recipe.train.steps} training steps, EMA weights)\n")
    print("| sampler | " + " | ".join(f"{s} steps" for s in steps_list) + " |")
    print("|---|" + "---|" * len(steps_list))
    for sampler in samplers:
        cells = [fid_of(sampler, s) for s in steps_list]
        print(f"| {sampler} (eta 0) | " if sampler == "ddim" else f"| {sampler} | ", end="")
        print(" | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    if extra:
        print("\n| configuration | FID | precision | recall |\n|---|---|---|---|")
        for r in extra:
            name = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("fid", "kid", "precision", "recall",
                                                                           "sample_seconds"))
            print(f"| {name} | {r['fid']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |")
    print(f"\nFID of {min(args.n, len(real))} real digits against all of them (floor): {floor:.3f}")
    if ratio is not None:
        print(f"DDIM-50 / DDPM-1000 FID ratio: {ratio:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
