"""Checkpoints: tensors in safetensors, everything else in JSON; both written atomically.

    checkpoints/step-000500.safetensors   model.*, ema.*, optim.<phase>.<i>.<key>, rng.*, loader.*
    checkpoints/step-000500.json          step, optimizer hyper-parameters, scheduler, scaler,
                                          guard state, non-tensor optimizer state

Every file is written to a temporary name in the same folder, flushed to disk and renamed
over its final name, so a reader sees the old file or the new one, never a part. The JSON
goes first and the .safetensors last: a checkpoint exists once its .safetensors does, so a
process killed between the two leaves the previous checkpoint the newest. Older checkpoints
are pruned only after the new one is complete. Files follow the user's umask.

Loading never unpickles: safetensors and json only.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

CKPT = re.compile(r"step-(\d+)\.safetensors$")


class CheckpointError(ValueError):
    """A missing or corrupt checkpoint; the message names the file."""


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (0o666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_replace(path: Path, write) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, flush it to disk and rename it
    over `path`. On any failure (a full disk: ENOSPC) the temporary file is removed and `path`
    is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_replace(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def save_checkpoint(directory: Path, step: int, tensors: dict[str, Tensor], meta: dict, keep: int) -> Path:
    """Write step-<step, 6 digits>.{safetensors,json} (e.g. step-000500); keep the newest `keep` checkpoints."""
    stem = directory / f"step-{step:06d}"
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    try:
        atomic_write_text(stem.with_suffix(".json"), json.dumps(_json_safe(meta), indent=1))
        _atomic_replace(stem.with_suffix(".safetensors"), lambda tmp: save_file(flat, tmp))
    except OSError as e:
        kept = list_checkpoints(directory)
        raise CheckpointError(f"could not write checkpoint {stem.with_suffix('.safetensors')} ({e.strerror or e}); "
                              + (f"the newest complete checkpoint, {kept[-1].name}, is intact" if kept
                                 else "no earlier checkpoint exists")) from None
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return stem.with_suffix(".safetensors")


def list_checkpoints(directory: Path) -> list[Path]:
    """The complete checkpoints (a .safetensors with its .json), oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if (m := CKPT.search(p.name)) and p.with_suffix(".json").is_file()]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict]:
    """Tensors and metadata of one checkpoint (path to its .safetensors)."""
    meta_path = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint {path} has no metadata file {meta_path.name}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a safetensors file ({e})") from None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint metadata {meta_path} is corrupt ({e})") from None
    return tensors, meta


def latest_checkpoint(directory: Path) -> Path:
    found = list_checkpoints(directory)
    if not found:
        raise CheckpointError(f"no checkpoint in {directory} (expected files named like step-000500.safetensors)")
    return found[-1]


# ---- optimizer state <-> (tensors, json) ---------------------------------------------------
def split_optimizer_state(prefix: str, state: dict) -> tuple[dict[str, Tensor], dict]:
    tensors, meta_state = {}, {}
    for idx, entry in state["state"].items():
        plain = {}
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = value
            else:
                plain[key] = value
        meta_state[str(idx)] = plain
    return tensors, {"param_groups": state["param_groups"], "plain": meta_state}


def join_optimizer_state(prefix: str, tensors: dict[str, Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {int(k): dict(v) for k, v in meta["plain"].items()}
    head = prefix + "."
    for name, value in tensors.items():
        if name.startswith(head):
            idx, key = name[len(head):].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}
