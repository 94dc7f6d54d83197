"""Run logs: metrics.jsonl and events.jsonl (one JSON object per line, flushed at once),
TensorBoard when it is installed, and truncation back to a step on resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .checkpoint import atomic_write_text


class JsonlLog:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @staticmethod
    def truncate(path: Path, step: int) -> None:
        """Keep only the lines with record["step"] <= step (a resumed run rewrites the rest)."""
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash
        atomic_write_text(path, "".join(k + "\n" for k in kept))


class TensorBoard:
    """Scalars to run_dir/tb when tensorboard is installed; otherwise nothing."""

    def __init__(self, directory: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
        else:
            self.writer = SummaryWriter(str(directory))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
