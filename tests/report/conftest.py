"""Fake run directories, written by hand in the trainer's format, for the report tests."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from stablegen.report.html import CSP

RECIPE = {
    "name": "gan-ring8",
    "description": "Non-saturating GAN with R1 on 8 Gaussians in a ring",
    "data": {"name": "ring8", "batch_size": 256},
    "model": {"family": "gan", "loss": "nonsaturating", "r1": 0.1},
    "optim": {
        "d": {"lr": 2e-4, "betas": [0.0, 0.99], "weight_decay": 0.0, "clip": 10.0, "warmup": 100, "schedule": "cosine"},
        "g": {"lr": 1e-4, "betas": [0.0, 0.99], "weight_decay": 0.0, "clip": 10.0, "warmup": 100, "schedule": "cosine"},
    },
    "train": {"steps": 2000, "seed": 0, "ema": 0.999, "log_every": 10, "sample_every": 250,
              "checkpoint_every": 500, "precision": "fp32"},
    "guard": {"rollback": True},
    "eval": {"every": 500, "metrics": ["modes", "hq"], "n": 2500},
}


def build_run(
    root: Path,
    name: str = "gan-ring8-run",
    *,
    family: str = "gan",
    steps: int = 2000,
    log_every: int = 10,
    events: bool = True,
    evaluate: bool = True,
    samples: bool = True,
    nonfinite: bool = False,
    summary: bool = True,
    seed: int = 0,
) -> Path:
    """A run directory like the trainer writes; a rollback at step 1200 rewinds the log to 1000."""
    rng = np.random.default_rng(seed)
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    recipe = json.loads(json.dumps(RECIPE))
    recipe["train"]["steps"] = steps
    phases = ["d", "g"] if family == "gan" else ["main"]
    if family != "gan":
        recipe.update(name="vae-digits", description="VAE on digits", data={"name": "digits", "batch_size": 128})
        recipe["model"] = {"family": family, "beta": 1.0}
        recipe["optim"] = {"main": recipe["optim"]["d"]}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))

    lines, event_lines = [], []
    logged = list(range(0, steps + 1, log_every))
    if events and steps >= 1500:  # the guard rolled back at 1200 to the snapshot at 1000
        cut = logged.index(1200) + 1
        logged = logged[:cut] + list(range(1000 + log_every, steps + 1, log_every))
    for i, step in enumerate(logged):
        t = 0.01 * i
        record: dict = {"step": step, "time": t}
        for j, phase in enumerate(phases):
            base = 0.7 + 0.5 * math.exp(-step / 400) + 0.3 * j
            record[f"loss/{phase}"] = base + 0.1 * rng.standard_normal()
            record[f"grad_norm/{phase}"] = float(np.exp(0.5 * rng.standard_normal()) * (1 + j))
            record[f"lr/{phase}"] = 2e-4 / (1 + j) * min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        if family == "gan":
            record["health/d_accuracy"] = 0.5 + 0.2 * math.exp(-step / 500) + 0.03 * rng.standard_normal()
        else:
            record["health/active_units"] = float(min(16, 4 + step // 100))
        first_1200 = events and step == 1200 and not event_lines
        if first_1200:
            record[f"loss/{phases[0]}"] = 40.0  # the spike the guard reacted to
        if nonfinite and step in (300, 310):
            record[f"loss/{phases[0]}"] = float("nan")
            record[f"grad_norm/{phases[0]}"] = float("inf")
        lines.append(json.dumps(record))
        if first_1200:
            event_lines = _events(phases[0])
        if evaluate and step and step % 500 == 0:
            lines.append(json.dumps({"step": step, "time": t, "eval/modes": min(8.0, 2 + step / 250), "eval/hq": 0.5 + step / 5000}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if events:
        (run / "events.jsonl").write_text("\n".join(json.dumps(e) for e in event_lines) + "\n")
    if samples:
        (run / "samples").mkdir()
        for step in range(0, steps + 1, 250):
            _grid_png(run / "samples" / f"step-{step:06d}.png", rng, step / max(steps, 1))
        _grid_png(run / "samples" / "final.png", rng, 1.0)
    if evaluate:
        (run / "eval.json").write_text(json.dumps(
            {"metrics": {"modes": 8.0, "hq": 0.93, "reverse_kl": 0.05}, "n": 2500, "features": "raw", "ema": True, "step": steps}))
    if summary:
        (run / "summary.json").write_text(json.dumps({
            "status": "finished", "steps": steps, "wall_time": 83.5,
            "events": {"loss_spike": 1, "grad_explosion": 1, "nonfinite": 1} if events else {},
            "rollbacks": 1 if events else 0, "message": "finished after %d steps" % steps}))
    return run


def _events(phase: str) -> list[dict]:
    return [
        {"step": 700, "time": 0.7, "detector": "grad_explosion", "action": "skip",
         "message": f"grad_norm/{phase} 85.1 > 10 x median 3.2; step skipped", "evidence": {"grad_norm": 85.1, "median": 3.2}},
        {"step": 1150, "time": 1.15, "detector": "loss_spike", "action": "warn",
         "message": f"loss/{phase} jumped 6 MAD above its median", "evidence": {"z": 6.2}},
        {"step": 1200, "time": 1.2, "detector": "nonfinite", "action": "rollback",
         "message": "non-finite gradient; rolled back to step 1000, learning rate x 0.5", "evidence": {"to_step": 1000.0, "lr_scale": 0.5}},
    ]


def _grid_png(path: Path, rng: np.random.Generator, quality: float) -> None:
    """An 8x8 grid of 8x8 'digits', noisier early in training, upscaled 3x like image_grid does."""
    tiles = np.zeros((8 * 9 + 1, 8 * 9 + 1), dtype=np.float64)
    for r in range(8):
        for c in range(8):
            blob = np.zeros((8, 8))
            blob[2:6, 2 + (r + c) % 3 : 4 + (r + c) % 3] = 1.0
            tiles[1 + 9 * r : 9 + 9 * r, 1 + 9 * c : 9 + 9 * c] = quality * blob + (1 - quality) * rng.random((8, 8))
    img = (tiles * 255).clip(0, 255).astype(np.uint8).repeat(3, 0).repeat(3, 1)
    Image.fromarray(np.stack([img] * 3, -1)).save(path)


@pytest.fixture
def make_run(tmp_path):
    def make(name: str = "gan-ring8-run", **options) -> Path:
        return build_run(tmp_path, name, **options)

    return make


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _check_self_contained(html: str) -> list[tuple[int, int]]:
    """Assert the page loads nothing from outside and every <img> is a decodable PNG; return their sizes."""
    parser = _Tags()
    parser.feed(html)
    tags = [t for t, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    assert not re.search(r"(src|href)=\"(?!data:|#)", html), "only data URIs and in-page anchors"
    assert "url(" not in html and "@import" not in html
    assert f'content="{CSP}"' in html
    sizes = []
    for tag, attrs in parser.tags:
        if tag == "img":
            prefix = "data:image/png;base64,"
            assert attrs["src"].startswith(prefix) and attrs.get("alt")
            with Image.open(io.BytesIO(base64.b64decode(attrs["src"][len(prefix) :], validate=True))) as im:
                im.load()
                assert im.format == "PNG"
                sizes.append(im.size)
    return sizes


@pytest.fixture
def check_self_contained():
    return _check_self_contained
