"""GAN stability on 2-D mixtures and stacked digits (BENCHMARKS.md, "Stability on 2-D mixtures"
and "Mode collapse on images: stacked digits").

Protocol: the VEEGAN / PacGAN one (Srivastava et al. 2017, Table 1; Lin et al. 2018, Table 1).
ring8 / grid25, 2,500 samples per run; a sample is high quality (HQ) within 3 std of its
nearest mean; a mode is covered by >= 1 HQ sample; reverse KL = KL(HQ histogram || uniform);
a run *succeeds* when every mode is covered and %HQ >= 90.

Two trainers, both through stablegen's own trainer so that only the recipe differs:
  stablegen  the built-in recipe (gan-ring8 / gan-grid25 / dcgan-stacked), unchanged.
  baseline   "a plain GAN as tutorials write it": the same data, batch, network sizes and step
             count, and nothing else: BCE (non-saturating) loss, Adam lr 2e-4 with default betas
             (0.9, 0.999) (the 2-D parts) or the DCGAN paper's (0.5, 0.999) (stacked digits),
             constant learning rate, no packing, no R1 / GP / spectral norm / label smoothing /
             instance noise / minibatch stddev, no EMA, the StabilityGuard off. The MLP nets are
             stablegen's (LeakyReLU critic, ReLU generator), as in the tutorials.

Parts:
  a  ring8 and grid25 over --seeds seeds: modes, %HQ, reverse KL per seed; success rates.
  b  robustness grid: learning rate (1e-4, 3e-4, 1e-3, 3e-3) x Adam beta1 (0.0, 0.5, 0.9),
     --grid-seeds seeds per cell: success rates of both. In stablegen's recipe the grid's lr is
     the generator's and the critic keeps the recipe's critic / generator lr ratio (TTUR);
     beta1 applies to both phases, beta2 stays each side's own.
  c  stacked digits (1,000 modes): modes covered and KL(mode histogram || uniform) from
     26,000 samples (the digits classifier reads each channel), baseline DCGAN vs stablegen.

    OMP_NUM_THREADS=1 python benchmarks/stability.py --part a,b --seeds 10 --grid-seeds 1 --jobs 2
    OMP_NUM_THREADS=1 python benchmarks/stability.py --part c --seeds 2 --steps 2000

`--set key=value` (repeatable) overrides stablegen's recipe in every run, after the grid's lr /
beta1, to measure a variant without editing the built-in recipe; the baseline stays as it is.
`--cells 1e-4:0,3e-3:0.9` runs only those cells of part b; `--ratios 50,30` also measures each
mixture run sampled with Jacobian truncation at those thresholds (keys `t50_modes`, `t50_hq`, ...),
the same trained generator and sampling seed, so a threshold is screened without retraining.

Writes benchmarks/results/stability.json (every run, the settings and the machine) and prints
markdown tables. Runs go to a temporary directory and are deleted.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "stability.json"
MIXTURE_RECIPES = {"ring8": "gan-ring8", "grid25": "gan-grid25"}
NUM_MODES = {"ring8": 8, "grid25": 25}
GRID_LRS = (1e-4, 3e-4, 1e-3, 3e-3)
GRID_BETA1 = (0.0, 0.5, 0.9)
HQ_SUCCESS = 0.9  # %HQ a successful run needs (with every mode covered)
HQ_GOAL, KL_GOAL = 0.95, 0.05  # the stability issue's goal per run (with every mode covered)
STACKED_RECIPE = "dcgan-stacked"
STACKED_SAMPLES = 26_000


# ---- the two recipes ---------------------------------------------------------------------------
def stablegen_recipe(name: str, lr: float | None = None, beta1: float | None = None,
                     pack: int | None = None, data: str | None = None) -> dict:
    """The built-in recipe as a dict, optionally with the robustness grid's lr / beta1 applied."""
    from stablegen.recipe import read_raw

    raw = read_raw(name)
    if data is not None:
        raw["data"] = {**raw.get("data", {}), "name": data}
    if pack is not None:
        raw["model"]["pack"] = pack
    optim = raw.setdefault("optim", {})
    g_lr = float(optim.get("g", {}).get("lr", 2e-4))
    for phase in ("d", "g"):
        o = optim.setdefault(phase, {})
        if lr is not None:
            o["lr"] = lr * float(o.get("lr", 2e-4)) / g_lr  # keep the recipe's d / g ratio
        if beta1 is not None:
            o["betas"] = [beta1, float(o.get("betas", (0.5, 0.999))[1])]
    return raw


def baseline_recipe(name: str, lr: float = 2e-4, beta1: float = 0.9, data: str | None = None) -> dict:
    """A plain GAN: the built-in recipe's data, net sizes, batch and steps; no stabilizer at all."""
    from stablegen.recipe import read_raw

    raw = read_raw(name)
    if data is not None:
        raw["data"] = {**raw.get("data", {}), "name": data}
    keep = ("family", "net", "z_dim", "width", "depth")
    model = {k: v for k, v in raw["model"].items() if k in keep}
    model["loss"] = "ns"
    plain = {"lr": lr, "betas": [beta1, 0.999], "schedule": "constant"}
    train = {k: v for k, v in raw.get("train", {}).items() if k in ("steps", "threads")}
    return {"name": f"{raw.get('name', name)}-baseline", "data": raw["data"], "model": model,
            "optim": {"d": dict(plain), "g": dict(plain)}, "train": {**train, "ema": 0.0},
            "guard": {"enabled": False}, "eval": raw.get("eval", {})}


# ---- one run -------------------------------------------------------------------------------------
def run_one(job: dict) -> dict:
    """Train one recipe (in a worker process, `threads` threads) and measure it; job is JSON-able."""
    import torch

    torch.set_num_threads(job["threads"])
    import stablegen as sg

    overrides = {"train.seed": job["seed"], "train.progress": False, "train.sample_every": 0,
                 "train.checkpoint_every": 0, "train.threads": job["threads"]}
    if job.get("steps"):
        overrides["train.steps"] = job["steps"]
    run_dir = tempfile.mkdtemp(prefix="sg-stability-")
    t0, c0 = time.time(), time.process_time()
    try:
        run = sg.train(job["recipe"], overrides, run_dir=run_dir)
        wall, cpu = time.time() - t0, time.process_time() - c0
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
        ema = run.ema_state is not None
        if job["kind"] == "mixture":
            from stablegen.metrics.mixtures import mixture_metrics

            def measure(**kw) -> dict:
                x = run.sample(2500, ema=ema, seed=0, **kw)  # (2500, 2)
                return mixture_metrics(x, job["data"]) if torch.isfinite(x).all() else \
                    {"modes": 0.0, "hq": 0.0, "reverse_kl": math.inf}

            metrics = measure()
            if job["recipe"]["model"].get("truncation", "none") != "none":  # the raw generator beside it
                metrics.update({f"raw_{k}": v for k, v in measure(truncate=False).items()})
            for ratio in job.get("ratios", ()):  # other truncation thresholds, same generator
                run.method.cfg.truncation_ratio = ratio
                metrics.update({f"t{ratio:g}_{k}": v for k, v in measure(truncate=True).items()})
        else:
            metrics = run.evaluate(["stacked_modes"], n=STACKED_SAMPLES, ema=ema)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {**{k: v for k, v in job.items() if k != "recipe"}, **metrics, "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "status": summary["status"], "rollbacks": summary["rollbacks"],
            "events": summary["events"]}


def succeeded(r: dict, prefix: str = "") -> bool:
    return r[prefix + "modes"] == NUM_MODES[r["data"]] and r[prefix + "hq"] >= HQ_SUCCESS


def meets_goal(r: dict, prefix: str = "") -> bool:
    """The stability issue's goal for one run: every mode, >= 95 % HQ, reverse KL <= 0.05."""
    return (r[prefix + "modes"] == NUM_MODES[r["data"]] and r[prefix + "hq"] >= HQ_GOAL
            and r[prefix + "reverse_kl"] <= KL_GOAL)


def run_all(jobs: list[dict], workers: int, partial: Path) -> list[dict]:
    """Run the jobs; every finished run is also appended to `partial` (JSON lines), so an
    interrupted benchmark keeps what it measured."""
    done: list[dict] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for r in pool.map(run_one, jobs):
            done.append(r)
            with partial.open("a") as f:
                f.write(json.dumps(r, default=str) + "\n")
            extra = (f"modes {r['modes']:.0f} hq {100 * r['hq']:.1f}% rkl {r['reverse_kl']:.3f}"
                     if "hq" in r else f"modes {r['stacked_modes']:.0f} kl {r['stacked_kl']:.2f}")
            print(f"  [{len(done)}/{len(jobs)}] {r['part']} {r['data']} {r['method']} seed {r['seed']} "
                  f"{_cell(r)}{extra} ({r['cpu_s']:.0f} s cpu, {r['wall_s']:.0f} s wall)", flush=True)
    return done


def _job_key(r: dict) -> tuple:
    """What identifies one run of the protocol, in a job or in its result."""
    return (r["part"], r["data"], r["method"], r["seed"], r.get("lr"), r.get("beta1"))


def _cell(r: dict) -> str:
    return f"lr {r['lr']:g} b1 {r['beta1']:g} " if r["part"] == "b" else ""


# ---- jobs of each part -----------------------------------------------------------------------------
def jobs_a(datasets: list[str], seeds: range, steps: int | None) -> list[dict]:
    jobs = []
    for data in datasets:
        name = MIXTURE_RECIPES[data]
        for method, recipe in (("baseline", baseline_recipe(name)), ("stablegen", stablegen_recipe(name))):
            jobs += [{"part": "a", "kind": "mixture", "data": data, "method": method, "seed": s,
                      "steps": steps, "recipe": recipe} for s in seeds]
    return jobs


def jobs_b(datasets: list[str], seeds: range, steps: int | None) -> list[dict]:
    jobs = []
    for data in datasets:
        name = MIXTURE_RECIPES[data]
        for lr in GRID_LRS:
            for beta1 in GRID_BETA1:
                for method, recipe in (("baseline", baseline_recipe(name, lr, beta1)),
                                       ("stablegen", stablegen_recipe(name, lr, beta1))):
                    jobs += [{"part": "b", "kind": "mixture", "data": data, "method": method, "seed": s,
                              "lr": lr, "beta1": beta1, "steps": steps, "recipe": recipe} for s in seeds]
    return jobs


def jobs_c(seeds: range, steps: int | None, pack: int | None) -> list[dict]:
    data = "stacked-digits"
    recipes = (("baseline", baseline_recipe(STACKED_RECIPE, beta1=0.5, data=data)),
               ("stablegen", stablegen_recipe(STACKED_RECIPE, pack=pack, data=data)))
    return [{"part": "c", "kind": "stacked", "data": data, "method": method, "seed": s, "steps": steps,
             "recipe": recipe} for method, recipe in recipes for s in seeds]


# ---- tables --------------------------------------------------------------------------------------
def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def table_a(results: list[dict]) -> str:
    """Per-seed rows and a summary; runs sampled with Jacobian truncation also show the raw
    generator's figures (raw %HQ / raw reverse KL)."""
    rows = [r for r in results if r["part"] == "a"]
    out = ["| data | method | seed | modes | %HQ | reverse KL | raw modes | raw %HQ | raw reverse KL | cpu s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        raw = (f"{r['raw_modes']:.0f} | {100 * r['raw_hq']:.1f} | {r['raw_reverse_kl']:.3f}" if "raw_hq" in r
               else "- | - | -")
        out.append(f"| {r['data']} | {r['method']} | {r['seed']} | {r['modes']:.0f}/{NUM_MODES[r['data']]} | "
                   f"{100 * r['hq']:.1f} | {r['reverse_kl']:.3f} | {raw} | {r['cpu_s']:.0f} |")
    out += ["", "| data | method | runs | mean modes | mean %HQ | median reverse KL | success rate | goal met | "
            "raw: success / goal met |", "|---|---|---|---|---|---|---|---|---|"]
    for data in dict.fromkeys(r["data"] for r in rows):
        for method in ("baseline", "stablegen"):
            rs = [r for r in rows if r["data"] == data and r["method"] == method]
            if not rs:
                continue
            kls = sorted(r["reverse_kl"] for r in rs)
            raw = (f"{sum(succeeded(r, 'raw_') for r in rs)}/{len(rs)} / {sum(meets_goal(r, 'raw_') for r in rs)}/{len(rs)}"
                   if all("raw_hq" in r for r in rs) else "-")
            out.append(f"| {data} | {method} | {len(rs)} | {_mean([r['modes'] for r in rs]):.1f}/{NUM_MODES[data]} | "
                       f"{100 * _mean([r['hq'] for r in rs]):.1f} | {kls[len(kls) // 2]:.3f} | "
                       f"{sum(succeeded(r) for r in rs)}/{len(rs)} | {sum(meets_goal(r) for r in rs)}/{len(rs)} | {raw} |")
    return "\n".join(out)


def table_b(results: list[dict]) -> str:
    rows = [r for r in results if r["part"] == "b"]
    out = []
    for data in dict.fromkeys(r["data"] for r in rows):
        out += [f"{data}: success (all modes, %HQ >= 90) of baseline / stablegen, "
                f"mean %HQ in brackets", "",
                "| lr \\ beta1 | " + " | ".join(f"{b:g}" for b in GRID_BETA1) + " |",
                "|---|" + "---|" * len(GRID_BETA1)]
        for lr in GRID_LRS:
            cells = []
            for beta1 in GRID_BETA1:
                parts = []
                for method in ("baseline", "stablegen"):
                    rs = [r for r in rows if r["data"] == data and r["method"] == method
                          and r["lr"] == lr and r["beta1"] == beta1]
                    parts.append(f"{sum(succeeded(r) for r in rs)}/{len(rs)} ({100 * _mean([r['hq'] for r in rs]):.0f})"
                                 if rs else "-")
                cells.append(" / ".join(parts))
            out.append(f"| {lr:g} | " + " | ".join(cells) + " |")
        for method in ("baseline", "stablegen"):
            rs = [r for r in rows if r["data"] == data and r["method"] == method]
            out.append(f"\n{data} {method}: {sum(succeeded(r) for r in rs)}/{len(rs)} runs succeed over the grid")
        out.append("")
    return "\n".join(out)


def table_c(results: list[dict]) -> str:
    rows = [r for r in results if r["part"] == "c"]
    out = ["| method | seed | modes (of 1,000) | KL to uniform | cpu s |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['method']} | {r['seed']} | {r['stacked_modes']:.0f} | {r['stacked_kl']:.2f} | {r['cpu_s']:.0f} |")
    return "\n".join(out)


def stacked_real_reference(draws: int = 2) -> list[dict]:
    """The floor of part c: 26,000 *real* stacked images, read by the same classifier. Their KL to
    uniform is sampling noise (about 999 / (2 x 26,000) = 0.019) plus the classifier's errors."""
    import torch

    from stablegen.data.digits import stacked_digits
    from stablegen.metrics.classes import stacked_modes
    from stablegen.metrics.features import DigitsFeatures, extract

    features, out = DigitsFeatures(), []
    for draw in range(draws):
        x, _ = stacked_digits(STACKED_SAMPLES, torch.Generator().manual_seed(10_000 + draw))
        out.append({"draw": draw, **stacked_modes(extract(features, x).logits.argmax(-1))})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", default="a,b", help="comma list of a, b, c")
    p.add_argument("--data", default="ring8,grid25", help="mixtures of parts a and b")
    p.add_argument("--seeds", type=int, default=10, help="seeds per method (parts a and c)")
    p.add_argument("--first-seed", type=int, default=0, help="parts a and c use seeds first-seed .. first-seed+seeds-1, "
                   "part b first-seed .. first-seed+grid-seeds-1")
    p.add_argument("--grid-seeds", type=int, default=1, help="seeds per cell of the robustness grid (part b)")
    p.add_argument("--steps", type=int, default=None, help="override train.steps of every run (default: the recipe's)")
    p.add_argument("--grid-steps", type=int, default=None, help="train.steps of part b (default: --steps)")
    p.add_argument("--pack", type=int, default=None, help="PacGAN packing of stablegen's stacked-digits recipe (default: the recipe's)")
    p.add_argument("--jobs", type=int, default=2, help="parallel training processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    p.add_argument("--methods", default="baseline,stablegen", help="comma list of baseline, stablegen")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override of stablegen's runs, after the grid's lr / beta1 (repeatable; "
                        "the baseline keeps the built-in recipe's batch and steps)")
    p.add_argument("--cells", default=None, help="part b: only these LR:BETA1 cells (comma list, e.g. 1e-4:0,3e-3:0.9)")
    p.add_argument("--ratios", default="", help="also measure mixture runs at these Jacobian truncation ratios (comma list)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in OUT's .partial.jsonl and run only the missing ones")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    def comma_list(flag: str, value: str, allowed) -> list[str]:
        items = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in items if s not in allowed]
        if bad:
            p.error(f"{flag}: unknown value(s) {bad}; choose from {', '.join(allowed)}")
        return items

    parts = comma_list("--part", args.part, ("a", "b", "c"))
    datasets = comma_list("--data", args.data, tuple(MIXTURE_RECIPES))
    methods = comma_list("--methods", args.methods, ("baseline", "stablegen"))

    jobs: list[dict] = []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if "a" in parts:
        jobs += jobs_a(datasets, seeds, args.steps)
    if "b" in parts:
        jobs += jobs_b(datasets, range(args.first_seed, args.first_seed + args.grid_seeds),
                       args.grid_steps or args.steps)
    if "c" in parts:
        jobs += jobs_c(seeds, args.steps, args.pack)
    from stablegen.recipe import RecipeError, apply_overrides, parse_overrides

    try:
        overrides = parse_overrides(args.set)
    except RecipeError as e:
        p.error(f"--set: {e}")

    def with_overrides(method: str, recipe: dict) -> dict:
        return apply_overrides(recipe, overrides) if method == "stablegen" and overrides else recipe

    try:
        cells = None if args.cells is None else {tuple(float(v) for v in c.split(":")) for c in args.cells.split(",")}
        ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    except ValueError:
        p.error(f"--cells {args.cells!r} / --ratios {args.ratios!r}: expected LR:BETA1,... and numbers")
    if any(r <= 1 for r in ratios):
        p.error("--ratios: each truncation ratio must be > 1")
    jobs = [{**j, "threads": args.threads, "ratios": ratios, "recipe": with_overrides(j["method"], j["recipe"])}
            for j in jobs if j["method"] in methods
            and (cells is None or j["part"] != "b" or (j["lr"], j["beta1"]) in cells)]
    partial = args.out.with_suffix(".partial.jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept: list[dict] = []
    if args.resume and partial.exists():
        kept = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
        done_keys = {_job_key(r) for r in kept}
        jobs = [j for j in jobs if _job_key(j) not in done_keys]
    else:
        partial.unlink(missing_ok=True)
    print(f"{len(jobs)} training runs on {args.jobs} processes x {args.threads} threads "
          f"({len(kept)} kept from {partial}; each new run also appended to it)", flush=True)
    t0 = time.time()
    results = kept + run_all(jobs, args.jobs, partial)
    elapsed = time.time() - t0

    recipes = {}
    for data in datasets:
        recipes[f"{data}/baseline"] = baseline_recipe(MIXTURE_RECIPES[data])
        recipes[f"{data}/stablegen"] = with_overrides("stablegen", stablegen_recipe(MIXTURE_RECIPES[data]))
    if "c" in parts:
        recipes["stacked-digits/baseline"] = baseline_recipe(STACKED_RECIPE, beta1=0.5, data="stacked-digits")
        recipes["stacked-digits/stablegen"] = with_overrides(
            "stablegen", stablegen_recipe(STACKED_RECIPE, pack=args.pack, data="stacked-digits"))
    import torch

    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "machine": {"platform": platform.platform(), "processor": platform.processor(),
                           "cpus": os.cpu_count(), "torch": torch.__version__},
               "wall_s": round(elapsed, 1), "recipes": copy.deepcopy(recipes), "runs": results}
    if "c" in parts:
        payload["stacked_real"] = stacked_real_reference()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nwrote {args.out} ({elapsed / 60:.1f} min)\n")
    if "a" in parts:
        print("### Part a: seeds\n\n" + table_a(results) + "\n")
    if "b" in parts:
        print("### Part b: robustness grid\n\n" + table_b(results) + "\n")
    if "c" in parts:
        print("### Part c: stacked digits\n\n" + table_c(results) + "\n")
        floor = ", ".join(f"{r['stacked_kl']:.3f}" for r in payload["stacked_real"])
        print(f"real stacked images read by the classifier ({STACKED_SAMPLES:,} per draw): KL to uniform {floor}\n")


if __name__ == "__main__":
    main()
