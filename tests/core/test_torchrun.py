"""The commands of docs/scaling.md, run as they are written: `torchrun -m stablegen train ...`
with two processes (gloo on CPU), then `--resume`, then a process that dies and torchrun restarts.

Each process draws its own noise (seed + rank), so a two-process GAN or VAE run follows other
noise than one process does and its weights differ from one process's at the size of an update.
The weights are compared where training draws no noise, RealNVP (the resume and restart cases),
against one process with the same global batch."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

FAST = ["train.threads=1", "train.progress=false", "train.log_every=5", "eval.n=256"]
# RealNVP with a constant learning rate after warmup: the schedule does not depend on train.steps,
# so 10 steps, then a resume to 20, follow the same learning rates as 20 steps at once.
FLOW = ["realnvp-moons", *FAST, "data.n=1024", "optim.main.schedule=constant", "train.checkpoint_every=10"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*train_args: str, cwd: Path, program: tuple[str, ...] = ("-m", "stablegen"),
              launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 [launcher options] -m stablegen train ARGS`, on a free port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           *launcher, *program, "train", *train_args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=240)


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    newest = sorted((run_dir / "checkpoints").glob("step-*.safetensors"))[-1]
    return {k[len("model."):]: v for k, v in load_file(str(newest)).items() if k.startswith("model.")}


def _assert_complete(run_dir: Path, steps: int) -> None:
    for name in ("recipe.yaml", "metrics.jsonl", "events.jsonl", "summary.json", "report.html"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / f"checkpoints/step-{steps:06d}.safetensors").is_file()
    assert any((run_dir / "samples").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("finished", steps)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in records if any(k.startswith("loss/") for k in r)]  # not the final eval line
    assert logged == list(range(5, steps + 1, 5))  # each once: a resumed run rewrites what followed its checkpoint


def _assert_matches_one_process(run_dir: Path, tmp_path: Path, steps: int) -> None:
    """The same global batch of 64 in one process: only the order of the floating-point sums
    differs (a mean of two 32-sample means vs one 64-sample mean), measured at 3e-8 after 20 steps."""
    import stablegen as sg

    single = sg.train(FLOW[0], [*FLOW[1:], f"train.steps={steps}", "data.batch_size=64"],
                      run_dir=tmp_path / "single", report=False)
    ref, two = single.method.state_dict(), _final_weights(run_dir)
    assert two.keys() == ref.keys()
    for k in ref:
        assert torch.allclose(two[k], ref[k], rtol=1e-5, atol=1e-6), k


@pytest.mark.parametrize("recipe, data", [("gan-ring8", ["data.n=1024"]), ("vae-digits", [])])
def test_documented_command(tmp_path, recipe, data):
    run_dir = tmp_path / "ddp"
    out = _torchrun(recipe, *FAST, *data, "train.steps=20", "train.sample_every=10", "data.batch_size=32",
                    "--run-dir", str(run_dir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_complete(run_dir, 20)
    summaries = [line for line in out.stdout.splitlines() if line.startswith(("run ", "report: "))]
    assert len(summaries) == 2 and "finished after 20 steps" in summaries[0], out.stdout  # rank 0 alone prints


def test_resume_under_torchrun_matches_one_process(tmp_path):
    run_dir = tmp_path / "ddp"
    first = _torchrun(*FLOW, "train.steps=10", "data.batch_size=32", "--run-dir", str(run_dir), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    again = _torchrun("--run-dir", str(run_dir), "--resume", "train.steps=20", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished after 20 steps" in again.stdout
    _assert_complete(run_dir, 20)
    _assert_matches_one_process(run_dir, tmp_path, 20)


CRASH_ONCE = """
import os, sys

from stablegen.cli import main
from stablegen.train.loop import Trainer

train_step = Trainer._train_step


def dies_once(self, step):
    if step == 15 and self.rank == 1 and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
        os._exit(1)  # rank 1 dies part-way, after the checkpoint of step 10, on the first attempt only
    return train_step(self, step)


Trainer._train_step = dies_once
sys.exit(main())
"""


def test_a_restarted_worker_resumes_from_the_last_checkpoint(tmp_path):
    script = tmp_path / "dies_once.py"
    script.write_text(CRASH_ONCE)
    run_dir = tmp_path / "ddp"
    out = _torchrun(*FLOW, "train.steps=20", "data.batch_size=32", "--run-dir", str(run_dir), cwd=tmp_path,
                    program=(str(script),), launcher=("--max-restarts", "1"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"torchrun restarted the workers: resuming {run_dir} from step" in out.stderr
    _assert_complete(run_dir, 20)
    _assert_matches_one_process(run_dir, tmp_path, 20)


def test_a_restart_leaves_a_run_the_guard_stopped(tmp_path, monkeypatch, capsys):
    """A guard stop exits 3, which torchrun counts as a failure and restarts: the restarted command
    does not train the run again. (One process, with the variable torchrun sets on a restart.)"""
    from stablegen.cli import EXIT_STOPPED, main

    run_dir = tmp_path / "r"
    diverges = ["gan-ring8", *FAST, "data.n=1024", "train.steps=20", "guard.nonfinite=stop",
                "optim.d.lr=1e30", "optim.g.lr=1e30", "--run-dir", str(run_dir)]
    assert main(["train", *diverges]) == EXIT_STOPPED
    stopped = (run_dir / "summary.json").read_text()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert main(["train", *diverges]) == EXIT_STOPPED
    assert "a restart does not train it again" in capsys.readouterr().err
    assert (run_dir / "summary.json").read_text() == stopped
