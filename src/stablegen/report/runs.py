"""Read a run directory robustly: recipe, metrics and events (JSON lines), samples, eval and summary.

A missing file gives empty data and a malformed JSON line is skipped with a warning naming the
file and line, so a report can be drawn for a run that crashed mid-write or is still training.
Values may be NaN or +-Infinity (Python's json writes and reads them as such).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

_SAMPLE_NAME = re.compile(r"step-(\d+)\.png")


@dataclass
class Series:
    """One logged scalar over training, as the run survived it.

    A rollback makes the trainer log some steps again; the values it logged first on those steps
    are kept apart in `dropped_*` so a plot can still show the excursion that triggered it.
    """

    steps: np.ndarray  # (n,) float64, strictly increasing
    values: np.ndarray  # (n,) float64, may hold NaN / +-inf
    dropped_steps: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (m,) float64
    dropped_values: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (m,) float64

    def __len__(self) -> int:
        return len(self.steps)

    def last_finite(self) -> tuple[float, float] | None:
        """(step, value) of the last finite value, or None."""
        ok = np.isfinite(self.values)
        if not ok.any():
            return None
        i = int(np.flatnonzero(ok)[-1])
        return float(self.steps[i]), float(self.values[i])


@dataclass
class SampleImage:
    step: int | None  # training step of the grid; None for samples/final.png
    path: Path


@dataclass
class Run:
    """Everything a report needs from one run directory."""

    path: Path
    recipe: dict[str, Any]  # parsed recipe.yaml ({} when missing or unreadable)
    recipe_text: str  # recipe.yaml as written ("" when missing)
    metrics: list[dict[str, Any]]  # metrics.jsonl records, in file order
    events: list[dict[str, Any]]  # events.jsonl records, in file order
    samples: list[SampleImage]  # step grids by increasing step, then final.png
    eval: dict[str, Any] | None  # eval.json
    summary: dict[str, Any] | None  # summary.json
    _series: dict[str, Series] = field(default_factory=dict, repr=False)  # series() results by key

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def recipe_name(self) -> str:
        return str(self.recipe.get("name") or "")

    @property
    def description(self) -> str:
        return str(self.recipe.get("description") or "")

    @property
    def family(self) -> str:
        model = self.recipe.get("model")
        return str(model.get("family", "")) if isinstance(model, dict) else ""

    @property
    def data_name(self) -> str:
        data = self.recipe.get("data")
        return str(data.get("name", "")) if isinstance(data, dict) else ""

    @property
    def data_label(self) -> str:
        """The data the run actually trained on, e.g. "fashion-mnist, train split" or
        "npy imgs.npy, resized to 32 px" (from the resolved recipe, not the recipe's description)."""
        data = self.recipe.get("data")
        if not isinstance(data, dict) or not data.get("name"):
            return ""
        parts = [str(data["name"]) + (f" {Path(str(data['path'])).name}" if data.get("path") else "")]
        if data.get("split") not in (None, "all"):
            parts.append(f"{data['split']} split")
        if data.get("size"):
            parts.append(f"resized to {data['size']} px")
        return ", ".join(parts)

    @property
    def describes_its_data(self) -> bool:
        """False when the run's data differ from its built-in recipe's, whose description then
        names other data (a user's `data.name=folder` on dcgan-digits)."""
        from ..recipe import builtin_names, read_raw

        if self.recipe_name not in builtin_names():
            return True
        builtin = (read_raw(self.recipe_name).get("data") or {})
        data = self.recipe.get("data") if isinstance(self.recipe.get("data"), dict) else {}
        return all(data.get(k) == builtin.get(k) for k in ("name", "path") if k in builtin or data.get(k))

    @property
    def status(self) -> str:
        """finished / stopped / interrupted from summary.json; "unfinished" when there is none."""
        status = (self.summary or {}).get("status")
        return str(status) if status else "unfinished"

    @property
    def steps(self) -> int:
        steps = (self.summary or {}).get("steps")
        if _is_number(steps):
            return int(steps)
        logged = [r["step"] for r in self.metrics + self.events if _is_number(r.get("step"))]
        return int(max(logged)) if logged else 0

    @property
    def wall_time(self) -> float | None:
        wall = (self.summary or {}).get("wall_time")
        if _is_number(wall) and math.isfinite(wall):
            return float(wall)
        times = [r["time"] for r in self.metrics + self.events if _is_number(r.get("time"))]
        times = [t for t in times if math.isfinite(t)]
        return max(times) if times else None

    @property
    def event_counts(self) -> dict[str, int]:
        """Events per detector: counted from events.jsonl, else taken from summary.json."""
        if self.events:
            return dict(Counter(str(e.get("detector", "?")) for e in self.events))
        counts = (self.summary or {}).get("events")
        if isinstance(counts, dict):
            return {str(k): int(v) for k, v in counts.items() if _is_number(v)}
        return {}

    @property
    def rollbacks(self) -> int:
        rollbacks = (self.summary or {}).get("rollbacks")
        if _is_number(rollbacks):
            return int(rollbacks)
        return sum(1 for e in self.events if e.get("action") == "rollback")

    def keys(self) -> list[str]:
        """Numeric metric keys other than step and time, in first-seen order."""
        seen: dict[str, None] = {}
        for record in self.metrics:
            for key, value in record.items():
                if key not in ("step", "time") and _is_number(value):
                    seen.setdefault(key, None)
        return list(seen)

    def series(self, key: str) -> Series:
        """The values logged under `key` against their steps, rollbacks resolved (see Series)."""
        if key not in self._series:
            self._series[key] = self._read_series(key)
        return self._series[key]

    def _read_series(self, key: str) -> Series:
        pairs = [(r["step"], r[key]) for r in self.metrics if _is_number(r.get(key))]
        if not pairs:
            return Series(np.zeros(0), np.zeros(0))
        steps, values = (np.asarray(v, dtype=np.float64) for v in zip(*pairs))
        # A point survives if no later point was logged at the same or an earlier step.
        later_min = np.minimum.accumulate(steps[::-1])[::-1]  # later_min[i] = min(steps[i:])
        later_min = np.append(later_min[1:], np.inf)  # min(steps[i+1:])
        keep = steps < later_min
        return Series(steps[keep], values[keep], steps[~keep], values[~keep])

    @property
    def eval_against(self) -> str:
        """What eval.json's metrics were measured against, in words ('the test split, held out'),
        or '' when eval.json does not say (runs from before eval.split)."""
        split = (self.eval or {}).get("split")
        if not isinstance(split, str):
            return ""
        what = "the training data" if split == "all" else f"the {split} split"
        return f"{what}, {'held out' if self.eval.get('held_out') else 'not held out (trained on)'}"

    def eval_metrics(self) -> dict[str, float]:
        """Final metrics from eval.json; without it, the last logged eval/* values."""
        if self.eval and isinstance(self.eval.get("metrics"), dict):
            return {str(k): v for k, v in self.eval["metrics"].items()}
        out = {}
        for key in self.keys():
            if key.startswith("eval/"):
                last = self.series(key).last_finite()
                if last is not None:
                    out[key[len("eval/") :]] = last[1]
        return out


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory; only the directory itself must exist."""
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory not found: {path}")
    recipe_text, recipe = _read_recipe(path / "recipe.yaml")
    return Run(
        path=path.resolve(),
        recipe=recipe,
        recipe_text=recipe_text,
        metrics=read_jsonl(path / "metrics.jsonl"),
        events=read_jsonl(path / "events.jsonl"),
        samples=_list_samples(path / "samples"),
        eval=_read_json(path / "eval.json"),
        summary=_read_json(path / "summary.json"),
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON objects with an integer-like "step", one per line; other lines are skipped with a warning."""
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                warnings.warn(f"{path}:{lineno}: skipped a malformed line ({e.msg})", stacklevel=2)
                continue
            if not isinstance(record, dict) or not _is_number(record.get("step")) or not math.isfinite(record["step"]):
                warnings.warn(f"{path}:{lineno}: skipped a line that is not an object with a numeric step", stacklevel=2)
                continue
            records.append(record)
    return records


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as e:
        warnings.warn(f"{path}: unreadable JSON ({e.msg}); ignored", stacklevel=3)
        return None
    if not isinstance(data, dict):
        warnings.warn(f"{path}: expected a JSON object; ignored", stacklevel=3)
        return None
    return data


def _read_recipe(path: Path) -> tuple[str, dict[str, Any]]:
    if not path.is_file():
        return "", {}
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        recipe = yaml.safe_load(text)
    except yaml.YAMLError as e:
        warnings.warn(f"{path}: unreadable YAML ({e}); shown as text only", stacklevel=3)
        return text, {}
    return text, recipe if isinstance(recipe, dict) else {}


def _list_samples(folder: Path) -> list[SampleImage]:
    if not folder.is_dir():
        return []
    samples = []
    for p in folder.glob("step-*.png"):
        match = _SAMPLE_NAME.fullmatch(p.name)
        if match:
            samples.append(SampleImage(int(match.group(1)), p))
    samples.sort(key=lambda s: s.step)
    if (folder / "final.png").is_file():
        samples.append(SampleImage(None, folder / "final.png"))
    return samples


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
