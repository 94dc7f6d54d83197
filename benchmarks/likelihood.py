"""Held-out bits/dim on the scikit-learn digits (the protocol of BENCHMARKS.md, "Likelihood").

Split: stablegen.data.digits.benchmark_split() (1,293 train, 144 validation, 360 test).
Each model trains on train with early stopping on validation bits/dim, keeps its best
weights, and reports test bits/dim (continuous models: averaged over 5 uniform dequantization
draws; discrete models: exact), beside the uniform baseline log2(17) = 4.09 and a per-pixel
categorical with add-one smoothing fitted on train. Writes benchmarks/results/likelihood.json
and prints a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/likelihood.py                 # 600 s per model
    OMP_NUM_THREADS=1 python benchmarks/likelihood.py --budget 120 --models pixelcnn,glow

A model is one `Entry` in MODELS: a name, a build function (DataInfo -> Method) and its
training settings; `log_prob` overrides how test log-likelihoods are computed (a VAE passes
its IWAE bound with k >= 100 there).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from stablegen.base import Batch, DataInfo, Method
from stablegen.data.digits import LEVELS, benchmark_split, load_digits, to_levels
from stablegen.methods import glow, pixelcnn, realnvp
from stablegen.metrics.likelihood import bits_per_dim, image_bits_per_dim

INFO = DataInfo(name="digits", kind="image", shape=(1, 8, 8), num_classes=10, levels=LEVELS)
DIM = 64


@dataclass
class Entry:
    """One model of the table and how to train it."""

    name: str
    build: Callable[[DataInfo], Method]
    lr: float = 2e-3  # Adam learning rate (cosine decay to 0 over max_steps after a warmup)
    batch_size: int = 64
    max_steps: int = 3000  # length of the cosine schedule; the time budget may end training first
    eval_every: int = 100  # steps between validation evaluations (early stopping)
    patience: int = 10  # evaluations without improvement before stopping
    clip: float = 50.0  # gradient-norm clip
    warmup: int = 50  # linear learning-rate warmup steps
    log_prob: Callable[[Method, Tensor], Tensor] | None = None  # default: method.log_prob
    notes: str = ""


MODELS: list[Entry] = [
    Entry("PixelCNN", lambda info: pixelcnn.build(pixelcnn.PixelCNNConfig(channels=32, blocks=6, dropout=0.1), info),
          notes="gated, 6 blocks x 32 channels, dropout 0.1"),
    Entry("Glow", lambda info: glow.build(glow.GlowConfig(levels=2, steps=8, width=32, depth=1), info),
          notes="2 levels x 8 steps, width 32, learned split prior"),
    Entry("RealNVP", lambda info: realnvp.build(realnvp.RealNVPConfig(couplings=3, scales=2, width=32, depth=1), info),
          notes="2 scales, 3 couplings per mask type, width 32"),
]


def is_discrete(method: Method) -> bool:
    return bool(getattr(method, "log_prob_is_discrete", False))


def evaluate_bpd(entry: Entry, method: Method, x: Tensor, draws: int, seed: int) -> float:
    """Mean bits/dim of x under `method`; continuous models average `draws` dequantizations."""
    method.eval()
    log_prob = entry.log_prob or (lambda m, v: m.log_prob(v))
    bpd = image_bits_per_dim(lambda v: log_prob(method, v), x, continuous=not is_discrete(method), draws=draws,
                             generator=torch.Generator().manual_seed(seed))
    method.train()
    return bpd.mean().item()


def train_entry(entry: Entry, data: dict[str, Tensor], budget: float, seed: int) -> dict:
    """Train with early stopping on validation bpd; return the row of the results table."""
    torch.manual_seed(seed)
    method = entry.build(INFO)
    x_train, y_train = data["x_train"], data["y_train"]
    g = torch.Generator().manual_seed(seed)

    def batch() -> Batch:
        idx = torch.randint(len(x_train), (entry.batch_size,), generator=g)
        return Batch(x_train[idx], y_train[idx])

    phases = method.phases()
    optims = [torch.optim.Adam(p.params, lr=entry.lr) for p in phases]

    def lr_at(step: int) -> float:
        if step < entry.warmup:
            return entry.lr * (step + 1) / entry.warmup
        return entry.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, step / entry.max_steps)))

    start = time.perf_counter()
    method.data_init(batch())
    best = {"val_bpd": math.inf, "step": 0, "state": copy.deepcopy(method.state_dict())}
    bad_evals, step = 0, 0
    curve = []
    while step < entry.max_steps and time.perf_counter() - start < budget:
        for phase, opt in zip(phases, optims):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            for _ in range(phase.repeats):
                loss, _ = phase.loss(batch(), step)
                opt.zero_grad(set_to_none=True)
                loss.mean().backward()
                torch.nn.utils.clip_grad_norm_(phase.params, entry.clip)
                opt.step()
        step += 1
        if step % entry.eval_every == 0:
            val = evaluate_bpd(entry, method, data["x_val"], draws=1, seed=1)
            curve.append((step, round(val, 4)))
            if val < best["val_bpd"]:
                best = {"val_bpd": val, "step": step, "state": copy.deepcopy(method.state_dict())}
                bad_evals = 0
            else:
                bad_evals += 1
                if bad_evals >= entry.patience:
                    break
    train_s = time.perf_counter() - start
    method.load_state_dict(best["state"])
    test = evaluate_bpd(entry, method, data["x_test"], draws=5, seed=2)
    return {"model": entry.name, "test_bpd": round(test, 4), "val_bpd": round(best["val_bpd"], 4),
            "best_step": best["step"], "steps": step, "wall_s": round(time.perf_counter() - start, 1),
            "train_s": round(train_s, 1), "params": sum(p.numel() for p in method.parameters()),
            "notes": entry.notes, "val_curve": curve}


def categorical_baseline(x_train: Tensor, x_test: Tensor) -> float:
    """Per-pixel categorical over the 17 levels, add-one smoothing, fitted on train: test bpd."""
    lv_train, lv_test = to_levels(x_train).flatten(1), to_levels(x_test).flatten(1)  # (N, 64)
    counts = torch.ones(DIM, LEVELS)
    counts.scatter_add_(1, lv_train.T, torch.ones_like(lv_train.T, dtype=torch.float32))
    log_p = (counts / counts.sum(1, keepdim=True)).log()  # (64, 17)
    ll = log_p.gather(1, lv_test.T).sum(0)  # (N_test,)
    return bits_per_dim(ll, DIM, continuous=False).mean().item()


def load_split() -> dict[str, Tensor]:
    x, y = load_digits()
    train, val, test = (torch.from_numpy(i) for i in benchmark_split())
    return {"x_train": x[train], "y_train": y[train], "x_val": x[val], "x_test": x[test]}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | test bits/dim | val bits/dim | best step / steps | wall s | params | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = f"{r['best_step']} / {r['steps']}" if "steps" in r else "-"
        lines.append(f"| {r['model']} | {r['test_bpd']:.3f} | {r.get('val_bpd', float('nan')):.3f} | {steps} "
                     f"| {r.get('wall_s', 0):.0f} | {r.get('params', 0)} | {r.get('notes', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds per model")
    parser.add_argument("--models", default="", help="comma-separated subset of: "
                        + ", ".join(e.name.lower() for e in MODELS))
    parser.add_argument("--max-steps", type=int, default=None,
                        help="override every model's max_steps (the cosine schedule's length)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "likelihood.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wanted = {m.strip().lower() for m in args.models.split(",") if m.strip()}
    unknown = wanted - {e.name.lower() for e in MODELS}
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {[e.name.lower() for e in MODELS]}")

    data = load_split()
    rows = [{"model": "uniform", "test_bpd": round(math.log2(LEVELS), 4), "notes": "log2(17)"},
            {"model": "per-pixel categorical", "test_bpd": round(categorical_baseline(data["x_train"], data["x_test"]), 4),
             "notes": "add-one smoothing, fitted on train"}]
    for entry in MODELS:
        if wanted and entry.name.lower() not in wanted:
            continue
        if args.max_steps is not None:
            entry = replace(entry, max_steps=args.max_steps)
        print(f"training {entry.name} (budget {args.budget:.0f} s, at most {entry.max_steps} steps) ...", flush=True)
        rows.append(train_entry(entry, data, args.budget, args.seed))
        print(f"  test {rows[-1]['test_bpd']:.3f} bits/dim, {rows[-1]['wall_s']:.0f} s", flush=True)
    rows.sort(key=lambda r: r["test_bpd"])
    result = {"benchmark": "likelihood-digits", "budget_s": args.budget, "max_steps": args.max_steps,
              "threads": args.threads,
              "seed": args.seed, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "torch": torch.__version__, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(markdown(rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
