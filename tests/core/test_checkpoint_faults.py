"""Faults while writing and running: a full disk, a process killed between the two files of a
checkpoint or at random (SIGKILL), the user's umask, two processes on one run directory, resuming
with a changed recipe or before the first checkpoint."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import stablegen as sg
from stablegen.recipe import RecipeError
from stablegen.train import checkpoint as ckpt
from stablegen.train.lock import RunLocked, run_lock
from stablegen.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint


def _save(directory, step, value, keep=3):
    return save_checkpoint(directory, step, {"w": torch.full((4,), float(value))}, {"step": step}, keep)


def test_a_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    _save(tmp_path, 100, 1.0)

    def full_disk(flat, path):
        with open(path, "wb") as f:
            f.write(b"\0" * 10)  # part of the file made it to disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(CheckpointError, match=r"No space left on device.*step-000100.safetensors, is intact"):
        _save(tmp_path, 200, 2.0)
    assert latest_checkpoint(tmp_path).name == "step-000100.safetensors"
    tensors, meta = load_checkpoint(latest_checkpoint(tmp_path))
    assert torch.equal(tensors["w"], torch.ones(4)) and meta["step"] == 100
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


def test_a_kill_between_the_two_files_keeps_the_previous_checkpoint_the_newest(tmp_path, monkeypatch):
    """The .json goes first, the .safetensors last: killed in between, the newer step does not
    exist yet (an orphan .json is ignored) and resume takes the previous one."""
    _save(tmp_path, 100, 1.0)

    def killed(flat, path):
        raise KeyboardInterrupt  # stands in for a signal arriving mid-write

    monkeypatch.setattr(ckpt, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 200, 2.0)
    assert (tmp_path / "step-000200.json").is_file() and not (tmp_path / "step-000200.safetensors").exists()
    assert latest_checkpoint(tmp_path).name == "step-000100.safetensors"
    # a .safetensors without its .json (written by an older version) is not a checkpoint either
    (tmp_path / "step-000300.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "step-000100.safetensors"


def test_pruning_waits_for_the_new_checkpoint(tmp_path, monkeypatch):
    for step in (100, 200):
        _save(tmp_path, step, step, keep=2)
    monkeypatch.setattr(ckpt, "save_file", lambda flat, path: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(CheckpointError):
        _save(tmp_path, 300, 3.0, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000100.safetensors", "step-000200.safetensors"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = _save(tmp_path, 1, 0.0)
        ckpt.atomic_write_text(tmp_path / "summary.json", "{}")
    finally:
        os.umask(old)
    for p in (path, path.with_suffix(".json"), tmp_path / "summary.json"):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p.name


# ---- the run directory: one process at a time, resuming with a changed recipe --------------
QUICK = {"train.steps": 20, "train.progress": False, "train.sample_every": 0, "train.threads": 1, "data.n": 512,
         "eval.metrics": []}


def test_a_second_process_on_a_run_directory_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from stablegen.train.lock import run_lock\n"
        f"with run_lock(Path({str(tmp_path)!r})):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=rf"in use by another training process \(pid {holder.pid}\)"):
            with run_lock(tmp_path):
                pass
        with pytest.raises(RunLocked):
            sg.train("gan-ring8", QUICK, run_dir=tmp_path, report=False)
    finally:
        holder.kill()  # SIGKILL: the lock of a dead process
        holder.wait()
    with run_lock(tmp_path):  # ... does not block
        pass


def test_resume_refuses_a_changed_recipe_unless_allowed(tmp_path):
    sg.train("gan-ring8", {**QUICK, "train.checkpoint_every": 10}, run_dir=tmp_path / "r", stop_at=10, report=False)
    with pytest.raises(RecipeError, match=r"optim\.g\.lr.*--allow-changes"):
        sg.train(None, {"optim.g.lr": 5e-3}, run_dir=tmp_path / "r", resume=True, report=False)
    run = sg.train(None, {"train.steps": 30, "eval.n": 100}, run_dir=tmp_path / "r", resume=True, report=False)
    assert run.status == "finished"  # more steps and another eval are safe changes
    run = sg.train(None, {"train.steps": 40, "optim.g.lr": 5e-3}, run_dir=tmp_path / "r", resume=True,
                   allow_changes=True, report=False)
    assert run.status == "finished" and run.recipe.optim["g"].lr == 5e-3


def test_resume_before_the_first_checkpoint_starts_over_with_a_warning(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text(sg.recipe.dump_recipe(sg.recipe.load_recipe("gan-ring8", QUICK)))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 7, "loss/g": 1.0}) + "\n")  # the killed attempt's
    with pytest.warns(UserWarning, match="no checkpoint yet.*step 0"):
        run = sg.train(None, None, run_dir=run_dir, resume=True, report=False)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert run.status == "finished" and 7 not in steps


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_at_the_uninterrupted_weights(tmp_path):
    """benchmarks/kill_resume.py with a few kills (the benchmark runs 50 and more)."""
    out = tmp_path / "kill.json"
    done = subprocess.run([sys.executable, "benchmarks/kill_resume.py", "--kills", "4", "--steps", "200", "--max-delay", "4",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[2])
    result = json.loads(out.read_text()) if out.is_file() else {}
    assert done.returncode == 0 and result.get("final_weights_equal"), done.stderr[-2000:]
    assert result["kills"] >= 1  # the run may finish on its own before the fourth kill
