"""DDP throughput: samples/s of one process vs N processes (torchrun-style, gloo on CPU or
NCCL on GPU), same per-process batch, same recipe, in one run.

    python benchmarks/ddp.py [--recipe dcgan-digits] [--steps 200] [--procs 2] [--batch 64]

Writes benchmarks/results/ddp.json. On a 2-core CPU two processes compete for the same
cores, so the figure there measures the communication overhead, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(args, threads):
    return {"train.steps": args.steps, "train.log_every": 10, "train.progress": False, "train.sample_every": 0, "train.checkpoint_every": 0,
            "train.threads": threads, "data.batch_size": args.batch, "eval.metrics": [], "guard.check_every": 10**6}


def _worker(rank, world, port, args, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    import torch.distributed as dist

    import stablegen as sg

    sg.train(args.recipe, _overrides(args, args.threads), run_dir=f"{out}/ddp", report=False)
    dist.destroy_process_group()


def seconds_per_step(run_dir: str) -> float:
    """From metrics.jsonl's clock: steps 10 .. last, so start-up and the end of run are excluded."""
    rows = [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "lr/d" in r or "lr/main" in r]
    return (rows[-1]["time"] - rows[0]["time"]) / (rows[-1]["step"] - rows[0]["step"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="dcgan-digits")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every process, both sides")
    args = ap.parse_args()
    import stablegen as sg

    with tempfile.TemporaryDirectory() as out:
        sg.train(args.recipe, _overrides(args, args.threads), run_dir=f"{out}/single", report=False)
        mp.spawn(_worker, args=(args.procs, _port(), args, out), nprocs=args.procs, join=True)
        single, multi = seconds_per_step(f"{out}/single"), seconds_per_step(f"{out}/ddp")
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, cuda={torch.cuda.is_available()}, torch {torch.__version__}",
        "recipe": args.recipe, "steps": args.steps, "batch_per_process": args.batch, "procs": args.procs, "threads_per_process": args.threads,
        "single_samples_per_s": args.batch / single,
        "ddp_samples_per_s": args.batch * args.procs / multi,
    }
    res["speedup"] = res["ddp_samples_per_s"] / res["single_samples_per_s"]
    Path(__file__).parent.joinpath("results").mkdir(exist_ok=True)
    Path(__file__).parent.joinpath("results", "ddp.json").write_text(json.dumps(res, indent=1))
    print(f"| setup | samples/s |\n|---|---|\n| 1 process | {res['single_samples_per_s']:.0f} |\n"
          f"| {args.procs} processes | {res['ddp_samples_per_s']:.0f} |\n\nspeed-up {res['speedup']:.2f}x")


if __name__ == "__main__":
    main()
