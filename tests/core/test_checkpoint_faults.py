"""Faults while writing: a full disk, a process killed between the two files of a checkpoint,
the user's umask."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from stablegen.train import checkpoint as ckpt
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
