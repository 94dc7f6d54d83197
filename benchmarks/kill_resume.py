"""Kill training with SIGKILL at random moments, resume, and compare with an uninterrupted run.

    python benchmarks/kill_resume.py --kills 60 --out benchmarks/results/kill_resume.json
    python benchmarks/kill_resume.py --kills 60 --steps 300 --out benchmarks/results/kill_resume-300.json

One `stablegen train` runs to the end. Another, on the same recipe and seed, is started and
killed (SIGKILL: no handler runs, nothing is flushed) after a random delay, then started again
with `--resume`, over and over, until it finishes on its own. Checkpoints are written every few
steps, so many kills land inside a checkpoint write (a temporary file is left behind: counted).
The result says whether the final weights (model and EMA) equal the uninterrupted run's bit for
bit, as they must on CPU with deterministic kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

RECIPE = ["gan-ring8", "train.checkpoint_every=5", "train.keep_checkpoints=2",
          "train.sample_every=0", "train.progress=false", "train.threads=1", "train.ema=0.9", "data.n=1024",
          "eval.metrics=[]"]


def _train(run_dir: Path, resume: bool, steps: int) -> subprocess.Popen:
    args = ["train", "--run-dir", str(run_dir), "--resume", "train.threads=1"] if resume else \
        ["train", *RECIPE, f"train.steps={steps}", "--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "stablegen", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    newest = sorted((run_dir / "checkpoints").glob("step-*.safetensors"))[-1]
    return {k: v for k, v in load_file(str(newest)).items() if k.startswith(("model.", "ema."))}


def kill_and_resume(workdir: Path, kills: int, max_delay: float, seed: int, steps: int) -> dict:
    rng = random.Random(seed)
    full = workdir / "full"
    done = _train(full, resume=False, steps=steps)
    if done.wait() != 0:
        raise RuntimeError(f"the uninterrupted run failed: {done.stderr.read()}")
    run_dir, killed, in_write, restarts = workdir / "killed", 0, 0, 0
    while True:
        started = (run_dir / "recipe.yaml").is_file()
        proc = _train(run_dir, resume=started, steps=steps)
        restarts += 1
        if killed < kills:
            try:
                proc.wait(timeout=rng.uniform(0.2, max_delay))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
                leftovers = list((run_dir / "checkpoints").glob(".*.tmp")) if (run_dir / "checkpoints").is_dir() else []
                in_write += bool(leftovers)
                continue
        code = proc.wait()
        if code == 0 and json.loads((run_dir / "summary.json").read_text())["status"] == "finished":
            break
        if killed >= kills:
            raise RuntimeError(f"resume failed with exit code {code}: {proc.stderr.read()}")
    a, b = _final_weights(full), _final_weights(run_dir)
    equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return {"kills": killed, "kills_inside_a_checkpoint_write": in_write, "starts": restarts,
            "final_weights_equal": equal, "tensors_compared": len(a)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--max-delay", type=float, default=6.0, help="seconds; each kill waits uniform(0.2, this)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1000, help="training steps of the run (gan-ring8)")
    p.add_argument("--out", help="JSON result file")
    args = p.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        result = kill_and_resume(Path(tmp), args.kills, args.max_delay, args.seed, args.steps)
    result.update({"seconds": round(time.time() - t0, 1), "recipe": [*RECIPE, f"train.steps={args.steps}"],
                   "seed": args.seed,
                   "max_delay": args.max_delay, "command": " ".join(["python", *sys.argv])})
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    sys.exit(0 if result["final_weights_equal"] else 1)


if __name__ == "__main__":
    main()
