"""MCMC efficiency on targets with known answers: ESS per second and per gradient evaluation.

    python benchmarks/mcmc.py [--chains 4] [--warmup 1000] [--samples 1000] [--seed 0] [--repeats 3]
                              [--targets gaussian,funnel,banana] [--kernels rwmh,mala,hmc,nuts]
                              [--threads 1] [--device cpu] [--no-numpyro]

Targets (stablegen.mcmc.targets): the 100-d ill-conditioned Gaussian, Neal's 10-d funnel,
the 2-d banana (curvature 0.03). For each target and kernel: the worst (minimum over
dimensions) bulk and tail ESS, per second of sampling and per gradient evaluation (summed
over chains, sampling phase only), the largest split R-hat, divergences, and the largest
errors of the means (in true standard deviations) and of the standard deviations (relative),
the target acceptance warmup ended with (raised to 0.99 when a chain diverged) and how many
of `stablegen.mcmc.convergence_warnings` fired (R-hat > 1.01, ESS < 400, divergences);
each cell is the median over `--repeats` seeds (banana and funnel runs vary a lot by seed),
and every seed's own row is kept in the JSON ("runs").
NumPyro's NUTS runs beside them on the same targets, chains and iteration counts when numpyro
is installed (float64, chain_method="vectorized", NumPyro's own warmup; the sampling phase
is then one compiled `lax.scan` of `NUTS.sample`, timed without its compilation, faster of
two identical calls). Diagnostics for both come from
stablegen.mcmc.diagnostics (identical to ArviZ's). Writes benchmarks/results/mcmc.json and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stablegen import mcmc

RESULTS = Path(__file__).parent / "results" / "mcmc.json"


def row(target: mcmc.Target, name: str, draws, grads: int | None, seconds: float,
        divergences: int, acceptance: float, target_acceptance: float | None = None) -> dict:
    s = mcmc.summarize(draws, true_mean=target.mean, true_std=target.std)
    bulk, tail = float(s["ess_bulk"].min()), float(s["ess_tail"].min())
    chains, draws_per_chain = draws.shape[0], draws.shape[1]
    warnings = mcmc.convergence_warnings(s["rhat"], s["ess_bulk"], s["ess_tail"], divergences,
                                         chains * draws_per_chain)
    return {
        "target": target.name, "dim": target.dim, "sampler": name,
        "rhat_max": float(s["rhat"].max()), "ess_bulk_min": bulk, "ess_tail_min": tail,
        "ess_bulk_median": float(np.median(s["ess_bulk"])),
        "gradients": grads, "seconds": seconds,
        "ess_bulk_per_second": bulk / seconds, "ess_tail_per_second": tail / seconds,
        "ess_bulk_per_gradient": bulk / grads if grads else None,
        "ess_tail_per_gradient": tail / grads if grads else None,
        "divergences": divergences, "acceptance": acceptance,
        "mean_error_max": float(s["mean_error"].max()), "sd_error_max": float(s["sd_error"].max()),
        "sds": [float(v) for v in s["sds"][:4]], "true_sds": [float(v) for v in target.std[:4]],
        "target_acceptance": target_acceptance, "warnings": len(warnings), "warning_text": warnings,
    }


def median_row(runs: list[dict]) -> dict:
    """Median over repeats of every numeric field (the per-seed rows are kept in the JSON)."""
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "dim":
            vals = [r[k] for r in runs if r[k] is not None]
            out[k] = float(np.median(vals)) if vals else None
        elif k == "sds":
            out[k] = [float(v) for v in np.median([r[k] for r in runs], axis=0)]
    out["repeats"] = len(runs)
    out["runs"] = runs
    return out


def run_stablegen(target: mcmc.Target, kernel: str, args, device: torch.device, seed: int) -> dict:
    g = torch.Generator(device=device).manual_seed(seed)
    x0 = target.initial_positions(args.chains, g)
    draws, info = mcmc.sample(kernel, target.logdensity_fn, x0, args.warmup, args.samples, g)
    grads = int(info.num_grad_evals.sum()) if kernel != "rwmh" else None
    return row(target, f"stablegen {kernel}", draws, grads, info.seconds,
               int(info.num_divergent.sum()), float(info.acceptance_rate.mean()),
               float(info.target_acceptance.mean()))


def numpyro_potentials(target: mcmc.Target):
    """The same log-densities written in jax.numpy (potential = -log density)."""
    import jax.numpy as jnp

    if target.name == "gaussian":
        precision = jnp.asarray(torch.linalg.inv(target.covariance).cpu().numpy())
        return lambda x: 0.5 * x @ precision @ x
    if target.name == "funnel":
        d = target.dim
        return lambda x: x[0] ** 2 / 18.0 + 0.5 * jnp.sum(x[1:] ** 2) * jnp.exp(-x[0]) + 0.5 * (d - 1) * x[0]
    if target.name == "banana":
        return lambda x: 0.5 * (x[0] ** 2 / 100.0 + (x[1] + 0.03 * (x[0] ** 2 - 100.0)) ** 2
                                + jnp.sum(x[2:] ** 2))
    raise ValueError(f"no jax version of {target.name}")


def run_numpyro(target: mcmc.Target, args, seed: int) -> dict:
    import jax
    from numpyro.infer import MCMC, NUTS

    potential = numpyro_potentials(target)
    g = torch.Generator().manual_seed(seed)
    x0 = jax.numpy.asarray(target.initial_positions(args.chains, g).numpy())

    kernel = NUTS(potential_fn=potential, target_accept_prob=0.8)
    m = MCMC(kernel, num_warmup=args.warmup, num_samples=args.samples, num_chains=args.chains,
             chain_method="vectorized", progress_bar=False)
    m.warmup(jax.random.PRNGKey(seed), init_params=x0, collect_warmup=False)
    state = m.post_warmup_state  # adapted step size and mass matrix, one per chain

    def sampling(st):  # the sampling phase as one compiled scan (kernel.sample is vmapped)
        def body(s, _):
            s = kernel.sample(s, (), {})
            return s, (s.z, s.num_steps, s.diverging, s.accept_prob)
        return jax.lax.scan(body, st, None, length=args.samples)[1]

    compiled = jax.jit(sampling).lower(state).compile()  # compile time is not counted
    seconds = float("inf")
    for _ in range(2):  # the same computation twice: keep the faster
        t0 = time.perf_counter()
        z, steps, diverging, accept = jax.block_until_ready(compiled(state))
        seconds = min(seconds, time.perf_counter() - t0)
    draws = np.asarray(z).transpose(1, 0, 2)  # (draws, chains, dim) -> (chains, draws, dim)
    return row(target, "numpyro nuts", draws, int(np.asarray(steps).sum()), seconds,
               int(np.asarray(diverging).sum()), float(np.asarray(accept).mean()))


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    lines = ["| target | sampler | R-hat max | bulk ESS min | tail ESS min | grads | s | "
             "bulk ESS/s | bulk ESS/grad | tail ESS/grad | div | mean err | sd err | target acc | warnings |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['target']} ({r['dim']}-d) | {r['sampler']} | {r['rhat_max']:.3f} | "
            f"{r['ess_bulk_min']:.0f} | {r['ess_tail_min']:.0f} | {fmt(r['gradients'], '.0f')} | "
            f"{r['seconds']:.1f} | {r['ess_bulk_per_second']:.1f} | "
            f"{fmt(r['ess_bulk_per_gradient'], '.4f')} | {fmt(r['ess_tail_per_gradient'], '.4f')} | "
            f"{r['divergences']:.0f} | {r['mean_error_max']:.3f} | {r['sd_error_max']:.3f} | "
            f"{fmt(r.get('target_acceptance'), '.3g')} | {fmt(r.get('warnings'), '.0f')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--repeats", type=int, default=3, help="seeds per cell; the table shows medians")
    ap.add_argument("--targets", default="gaussian,funnel,banana")
    ap.add_argument("--kernels", default="rwmh,mala,hmc,nuts")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-numpyro", action="store_true", help="skip NumPyro's NUTS")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    numpyro_note = None
    if not args.no_numpyro:
        try:
            import jax
            import numpyro  # noqa: F401

            jax.config.update("jax_enable_x64", True)
        except ImportError:
            numpyro_note = "numpyro is not installed: NumPyro's NUTS was not run (pip install numpyro)"
            print(numpyro_note)
    run_reference = not args.no_numpyro and numpyro_note is None

    seeds = range(args.seed, args.seed + args.repeats)
    rows = []
    for name in args.targets.split(","):
        target = mcmc.make_target(name, device=device)
        for kernel in args.kernels.split(","):
            rows.append(median_row([run_stablegen(target, kernel, args, device, s) for s in seeds]))
            print(f"{name} {kernel}: {rows[-1]['seconds']:.1f} s per run", flush=True)
        if run_reference:
            rows.append(median_row([run_numpyro(target, args, s) for s in seeds]))
            print(f"{name} numpyro nuts: {rows[-1]['seconds']:.1f} s per run", flush=True)

    ratios = {}
    for name in args.targets.split(","):
        ours = [r for r in rows if r["target"] == name and r["sampler"] == "stablegen nuts"]
        ref = [r for r in rows if r["target"] == name and r["sampler"] == "numpyro nuts"]
        if ours and ref:
            ratios[name] = {k: ours[0][k] / ref[0][k] for k in
                            ("ess_bulk_per_gradient", "ess_tail_per_gradient", "ess_bulk_per_second")}
    result = {
        "command": "python benchmarks/mcmc.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k not in ("out", "no_numpyro")) + (" --no-numpyro" if args.no_numpyro else ""),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}, "
                   f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}",
        "chains": args.chains, "warmup": args.warmup, "samples": args.samples, "repeats": args.repeats,
        "rows": rows, "nuts_vs_numpyro": ratios, "note": numpyro_note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print()
    print(table(rows))
    for name, r in ratios.items():
        print(f"\n{name}: stablegen NUTS / NumPyro NUTS: "
              f"bulk ESS per gradient x{r['ess_bulk_per_gradient']:.2f}, "
              f"tail ESS per gradient x{r['ess_tail_per_gradient']:.2f}, "
              f"bulk ESS per second x{r['ess_bulk_per_second']:.3f}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
