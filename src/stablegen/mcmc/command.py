"""`stablegen mcmc TARGET`: sample a target with one kernel and print the diagnostics.

    stablegen mcmc banana --kernel nuts --chains 4 --samples 1000
    stablegen mcmc gaussian --kernel hmc --warmup 500 -o draws.npy --json
    stablegen mcmc mypkg.models:logp --dim 3          # a user's log-density, imported

Prints means and sds with their Monte Carlo standard errors, split R-hat, bulk and tail ESS
(Vehtari et al. 2021), acceptance, divergences, ESS per second and per gradient evaluation,
and for targets with known answers the errors of the estimated means and standard
deviations. When R-hat > 1.01, bulk or tail ESS < 400 or a transition diverged, it warns on
stderr, saying which and what to try (`--json` carries the same sentences in its "warnings"
list). `-o` saves the draws as (chains, draws, dim); `--json` prints one JSON object instead
of the tables. Exit codes: 0 done (warnings or not), 2 bad arguments (unknown target,
unimportable `module:function`, impossible sizes or device).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .diagnostics import convergence_warnings, summarize
from .sampling import DIVERGENCE_TARGET_ACCEPTANCE, KERNELS, sample
from .targets import TARGETS, TargetError, make_target

PER_DIM_ROWS = 12  # print every dimension up to this many, else a summary over dimensions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `stablegen mcmc`."""
    parser.add_argument("target", help=f"{', '.join(TARGETS)}, or module:function (a log-density "
                                       "mapping (chains, dim) to (chains,); needs --dim)")
    parser.add_argument("--kernel", choices=KERNELS, default="nuts", help="default: nuts")
    parser.add_argument("--chains", type=int, default=4, help="independent chains (default 4)")
    parser.add_argument("--samples", type=int, default=1000, help="draws kept per chain (default 1000)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="adaptation iterations per chain (default: as many as --samples)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dim", type=int, default=None,
                        help="dimension (required for module:function; default per built-in target)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--target-acceptance", type=float, default=None,
                        help="default: rwmh 0.234, mala 0.574, hmc 0.65, nuts 0.8")
    parser.add_argument("--divergence-target-acceptance", type=float,
                        default=DIVERGENCE_TARGET_ACCEPTANCE,
                        help="hmc and nuts: every chain's target once a chain diverges in warmup "
                             f"(default {DIVERGENCE_TARGET_ACCEPTANCE}; 0 keeps the target fixed)")
    parser.add_argument("--adaptation", choices=("per-chain", "pooled"), default="per-chain",
                        help="tune step size and mass matrix per chain or pooled over chains")
    parser.add_argument("--integration-steps", type=int, default=16, help="HMC's mean path length")
    parser.add_argument("--max-tree-depth", type=int, default=10, help="NUTS's doubling cap")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="save the draws as .npy, shape (chains, draws, dim)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _fail(message: str) -> int:
    print(f"stablegen mcmc: error: {message}", file=sys.stderr)
    return 2


def _device(name: str) -> torch.device:
    device = torch.device(name)  # RuntimeError on a malformed name
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available on this machine")
    return device


def _jsonable(value: Any) -> Any:
    """numpy/torch values to plain JSON; NaN and infinities become null."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"stablegen mcmc: warning: {warning}", file=sys.stderr)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _report(stats: dict[str, Any], known: bool) -> str:
    keys = ["means", "mcse_mean", "sds", "mcse_sd", "rhat", "ess_bulk", "ess_tail"] + (
        ["mean_error", "sd_error"] if known else [])
    headers = ["dim", "mean", "MCSE", "sd", "MCSE", "R-hat", "ESS bulk", "ESS tail"] + (
        ["|mean err|/sd", "|sd err|/sd"] if known else [])
    fmt = {"means": "{:.4g}", "mcse_mean": "{:.2g}", "sds": "{:.4g}", "mcse_sd": "{:.2g}",
           "rhat": "{:.3f}", "ess_bulk": "{:.0f}", "ess_tail": "{:.0f}", "mean_error": "{:.3f}",
           "sd_error": "{:.3f}"}
    dim = len(stats["means"])
    if dim <= PER_DIM_ROWS:
        rows = [[str(i)] + [fmt[k].format(stats[k][i]) for k in keys] for i in range(dim)]
        return _table(headers, rows)
    # many dimensions: the worst and the median over dimensions
    worst = {"rhat": np.max, "ess_bulk": np.min, "ess_tail": np.min, "mean_error": np.max,
             "sd_error": np.max}
    rows = []
    for label, pick in (("worst", worst), ("median", {})):
        cells = [label]
        for k in keys:
            if k in ("means", "sds", "mcse_mean", "mcse_sd"):
                cells.append("-")
            else:
                cells.append(fmt[k].format(pick.get(k, np.median)(stats[k])))
        rows.append(cells)
    return _table(headers, rows) + f"\n({dim} dimensions: worst and median over dimensions)"


def run(args: argparse.Namespace) -> int:
    """Run `stablegen mcmc` with parsed arguments; returns the exit code."""
    warmup = args.samples if args.warmup is None else args.warmup
    if args.chains < 1 or args.samples < 4 or warmup < 0:
        return _fail(f"need --chains >= 1, --samples >= 4 and --warmup >= 0; got "
                     f"{args.chains}, {args.samples}, {warmup}")
    if args.dim is not None and args.dim < 1:
        return _fail(f"--dim must be >= 1, got {args.dim}")
    if args.target_acceptance is not None and not 0 < args.target_acceptance < 1:
        return _fail(f"--target-acceptance must be in (0, 1), got {args.target_acceptance}")
    if not 0 <= args.divergence_target_acceptance < 1:
        return _fail(f"--divergence-target-acceptance must be in [0, 1), got "
                     f"{args.divergence_target_acceptance}")
    if args.integration_steps < 1 or args.max_tree_depth < 1:
        return _fail("--integration-steps and --max-tree-depth must be >= 1")
    try:
        device = _device(args.device)
    except RuntimeError as e:
        return _fail(f"bad --device {args.device!r}: {e}")
    dtype = {"float64": torch.float64, "float32": torch.float32}[args.dtype]
    try:
        target = make_target(args.target, args.dim, dtype=dtype, device=device)
    except TargetError as e:
        return _fail(str(e))
    generator = torch.Generator(device=device).manual_seed(args.seed)
    x0 = target.initial_positions(args.chains, generator, dtype=dtype)
    if target.mean is None:  # a user's function: check it once before the long run
        try:
            with torch.no_grad():
                out = target.logdensity_fn(x0)
        except Exception as e:  # noqa: BLE001 - report whatever the user's code raised
            return _fail(f"target {args.target!r} failed on positions of shape "
                         f"{tuple(x0.shape)}: {type(e).__name__}: {e}")
        if not isinstance(out, torch.Tensor) or out.shape != (args.chains,):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return _fail(f"target {args.target!r} must map (chains, dim) = {tuple(x0.shape)} to "
                         f"({args.chains},) log-densities, got {got}")

    draws, info = sample(
        args.kernel, target.logdensity_fn, x0, warmup, args.samples, generator,
        target_acceptance=args.target_acceptance,
        divergence_target_acceptance=args.divergence_target_acceptance or None,
        adaptation=args.adaptation,
        num_integration_steps=args.integration_steps, max_tree_depth=args.max_tree_depth,
        progress=not args.json and sys.stderr.isatty(),
    )
    grads = int(info.num_grad_evals.sum())
    stats = summarize(draws, num_grad_evals=grads or None, seconds=info.seconds,
                      true_mean=target.mean, true_std=target.std)
    known = target.mean is not None
    output = args.output
    if output is not None:
        output = output if output.suffix == ".npy" else output.with_name(output.name + ".npy")
        output.parent.mkdir(parents=True, exist_ok=True)
        np.save(output, draws.detach().cpu().numpy())

    acceptance = float(info.acceptance_rate.mean())
    divergences = int(info.num_divergent.sum())
    warnings = convergence_warnings(stats["rhat"], stats["ess_bulk"], stats["ess_tail"], divergences,
                                    args.chains * args.samples)
    if args.json:
        _print_warnings(warnings)  # on stderr too, so that --json > file still shows them
        out = {
            "target": args.target, "kernel": args.kernel, "dim": target.dim, "chains": args.chains,
            "samples": args.samples, "warmup": warmup, "seed": args.seed, "device": str(device),
            "mean_error": None, "sd_error": None,  # replaced when the answers are known
            **{k: _jsonable(v) for k, v in stats.items()},
            "acceptance": acceptance, "divergences": divergences,
            "gradient_evaluations": grads,
            "gradient_evaluations_warmup": int(info.num_grad_evals_warmup.sum()),
            "seconds": info.seconds, "seconds_warmup": info.seconds_warmup,
            "step_size": _jsonable(info.step_size),
            "target_acceptance": _jsonable(info.target_acceptance),
            "warnings": warnings,
            "true_means": _jsonable(target.mean) if known else None,
            "true_sds": _jsonable(target.std) if known else None,
            "output": str(output) if output is not None else None,
        }
        print(json.dumps(out))
        return 0

    print(f"{args.target} ({target.dim}-d), {args.kernel}: {args.chains} chains x {args.samples} draws "
          f"after {warmup} warmup, {info.seconds:.2f} s sampling + {info.seconds_warmup:.2f} s warmup "
          f"on {device}")
    print(_report(stats, known))
    bulk_min, tail_min = float(np.min(stats["ess_bulk"])), float(np.min(stats["ess_tail"]))
    line = (f"acceptance {acceptance:.3f}  divergences {divergences}  "
            f"R-hat max {float(np.max(stats['rhat'])):.3f}  "
            f"ESS/s (bulk min) {bulk_min / info.seconds:.1f}")
    if grads:
        line += f"  gradients {grads}  ESS/grad (bulk min) {bulk_min / grads:.4f}"
    print(line + f"  tail ESS min {tail_min:.0f}")
    if args.kernel in ("hmc", "nuts"):
        targets = " / ".join(f"{t:g}" for t in sorted({round(float(t), 4) for t in info.target_acceptance}))
        h = info.step_size.cpu()
        sizes = (" ".join(f"{float(v):.3g}" for v in h) if len(h) <= 8
                 else f"{float(h.min()):.3g} to {float(h.max()):.3g}")
        print(f"target acceptance {targets} (step size {sizes})")
    if known:
        print(f"moment errors: max |mean - true| / true sd = {float(np.max(stats['mean_error'])):.3f}, "
              f"max |sd - true| / true sd = {float(np.max(stats['sd_error'])):.3f}")
    if output is not None:
        print(f"wrote {output} {tuple(draws.shape)}")
    if not warnings:
        print("no warnings: R-hat, ESS and divergences pass")
    sys.stdout.flush()  # the warnings come after the report
    _print_warnings(warnings)
    return 0
