"""Several runs side by side on one self-contained HTML page (compare.html).

A table of the runs, one table of their eval metrics (the best value of each known metric in
bold), the recipe keys that differ, every logged curve overlaid with one colour per run (events as
ticks in the run's colour), the last sample picture of each run, and the full recipes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from stablegen.report.html import (
    CARD_PANEL,
    esc,
    fmt_duration,
    fmt_num,
    key_style,
    ordered_keys,
    page,
    plot_img,
    sample_img,
    status_badge,
    write_atomic,
)
from stablegen.report.plots import RUN_COLORS, Curve, Marker, Panel, panel_png
from stablegen.report.runs import Run, load_run

# Direction of the metrics stablegen computes, matched on a name's words ("reverse_kl" -> "kl").
LOWER_IS_BETTER = {"fid", "kid", "nll", "bpd", "bits", "kl", "mse", "error", "loss", "rhat"}
HIGHER_IS_BETTER = {"modes", "hq", "precision", "recall", "density", "coverage", "is", "accuracy", "acc", "ess"}


def write_compare(run_dirs: Sequence[str | Path], out_path: str | Path = "compare.html") -> Path:
    """Write the comparison page of `run_dirs` to `out_path`; return its path."""
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    path = Path(out_path)
    write_atomic(path, render_compare(runs))
    return path


def render_compare(runs: Sequence[Run]) -> str:
    labels = run_labels(runs)
    colors = [RUN_COLORS[i % len(RUN_COLORS)] for i in range(len(runs))]
    names = [f'<span class="swatch" style="background:{c}"></span>{esc(label)}' for label, c in zip(labels, colors)]
    sections = [
        '<header class="top"><div class="info"><div class="kicker">stablegen comparison</div>'
        f"<h1>{len(runs)} run{'s' if len(runs) != 1 else ''}</h1>"
        f'<p class="desc">{" · ".join(esc(label) for label in labels)}</p></div></header>',
        '<nav><a href="#runs">Runs</a><a href="#metrics">Metrics</a><a href="#recipe-diff">Recipe differences</a>'
        '<a href="#curves">Curves</a><a href="#samples">Samples</a><a href="#recipes">Recipes</a></nav>',
        '<h2 id="runs">Runs</h2>',
        _runs_table(runs, names),
        '<h2 id="metrics">Evaluation</h2>',
        _metrics_table(runs, names),
        '<h2 id="recipe-diff">Recipe differences</h2>',
        _recipe_diff(runs, names),
        f'<h2 id="curves">Training curves <small class="legend">{"".join(f"<span>{n}</span>" for n in names)}'
        "<span>ticks on the bottom edge: stability events</span></small></h2>",
        _curve_cards(runs, labels, colors),
        '<h2 id="samples">Last samples</h2>',
        _last_samples(runs, names),
        '<h2 id="recipes">Resolved recipes</h2>',
        "".join(
            f"<details><summary>{name}</summary><pre>{esc(run.recipe_text) or 'no recipe.yaml'}</pre></details>"
            for run, name in zip(runs, names)
        ),
    ]
    return page(f"{len(runs)} runs · stablegen comparison", "\n".join(sections))


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Directory names, made unique with the parent folder (then a number) where they clash."""
    names = [run.name for run in runs]
    labels = [f"{run.path.parent.name}/{run.name}" if names.count(run.name) > 1 else run.name for run in runs]
    return [f"{label} #{i + 1}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def metric_direction(name: str) -> int:
    """-1 when lower is better, +1 when higher is better, 0 when the name does not say."""
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    if words & LOWER_IS_BETTER:
        return -1
    if words & HIGHER_IS_BETTER:
        return 1
    return 0


def _runs_table(runs: Sequence[Run], names: Sequence[str]) -> str:
    rows = []
    for run, name in zip(runs, names):
        counts = run.event_counts
        breakdown = ", ".join(f"{d} {n}" for d, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        rows.append(
            f"<tr><td>{name}</td><td>{esc(run.recipe_name)}</td><td>{esc(run.family)}</td><td>{esc(run.data_name)}</td>"
            f"<td>{status_badge(run.status)}</td><td class=\"num\">{run.steps:,}</td>"
            f'<td class="num">{fmt_duration(run.wall_time)}</td><td class="num">{sum(counts.values())}</td>'
            f'<td>{esc(breakdown)}</td><td class="num">{run.rollbacks}</td></tr>'
        )
    return (
        '<div class="card"><table><tr><th>run</th><th>recipe</th><th>model</th><th>data</th><th>status</th>'
        '<th class="num">steps</th><th class="num">wall time</th><th class="num">events</th><th>by detector</th>'
        f'<th class="num">rollbacks</th></tr>{"".join(rows)}</table></div>'
    )


def _source(run: Run, values: dict[str, float]) -> str:
    """Where a run's eval numbers come from: eval.json (and the split it used) or the last logged values."""
    if run.eval and isinstance(run.eval.get("metrics"), dict):
        split = run.eval.get("split")
        return f"eval.json ({esc(split)})" if isinstance(split, str) else "eval.json"
    return "last logged" if values else "—"


def _metrics_table(runs: Sequence[Run], names: Sequence[str]) -> str:
    values = [run.eval_metrics() for run in runs]
    metrics = list(dict.fromkeys(k for v in values for k in v))
    if not metrics:
        return '<p class="empty">None of these runs has an evaluation.</p>'
    # a "best" only among runs measured on the same data against the same split
    comparable = len({(run.data_name, (run.eval or {}).get("split")) for run, v in zip(runs, values) if v}) == 1
    rows = []
    for metric in metrics:
        row = [v.get(metric) for v in values]
        finite = [x for x in row if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)]
        direction = metric_direction(metric)
        best = ((min(finite) if direction < 0 else max(finite)) if comparable and direction and len(finite) > 1
                else None)
        cells = "".join(
            f'<td class="num{" best" if x is not None and x == best else ""}">{"—" if x is None else fmt_num(x)}</td>'
            for x in row
        )
        arrow = {-1: " ↓", 1: " ↑", 0: ""}[direction]
        rows.append(f"<tr><td>{esc(metric)}{arrow}</td>{cells}</tr>")
    source = "".join(
        f'<td class="num">{_source(run, v)}</td>' for run, v in zip(runs, values)
    )
    head = "".join(f'<th class="num">{name}</th>' for name in names)
    return (
        f'<div class="card"><table><tr><th>metric</th>{head}</tr>{"".join(rows)}'
        f'<tr><td class="meta">source</td>{source}</tr></table>'
        + ('<p class="meta">↓ lower is better, ↑ higher is better; the best of each such row is in bold.</p></div>'
           if comparable else '<p class="meta">↓ lower is better, ↑ higher is better; no best is marked: these runs '
           'were evaluated on different data or splits, so their numbers do not compare.</p></div>')
    )


def _recipe_diff(runs: Sequence[Run], names: Sequence[str]) -> str:
    if len(runs) < 2:
        return '<p class="empty">One run: nothing to compare.</p>'
    flat = [dict(_flatten(run.recipe)) for run in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    missing = object()
    rows = []
    for key in keys:
        row = [f.get(key, missing) for f in flat]
        if len({json.dumps(x, sort_keys=True, default=str) if x is not missing else "\0" for x in row}) > 1:
            cells = "".join(f"<td>{'—' if x is missing else fmt_num(x)}</td>" for x in row)
            rows.append(f'<tr><td class="ev">{esc(key)}</td>{cells}</tr>')
    if not rows:
        return '<p class="empty">The resolved recipes are identical.</p>'
    head = "".join(f"<th>{name}</th>" for name in names)
    return f'<div class="card"><table><tr><th>key</th>{head}</tr>{"".join(rows)}</table></div>'


def _curve_cards(runs: Sequence[Run], labels: Sequence[str], colors: Sequence[str]) -> str:
    keys = ordered_keys(list(dict.fromkeys(k for run in runs for k in run.keys())))
    if not keys:
        return '<p class="empty">No metrics logged in these runs.</p>'
    xmax = max(max(run.steps for run in runs), 1)
    run_keys = [set(run.keys()) for run in runs]
    cards = []
    for key in keys:
        present = [i for i, mine in enumerate(run_keys) if key in mine]
        curves = [Curve(labels[i], runs[i].series(key), colors[i]) for i in present]
        markers = [Marker(float(e["step"]), colors[i]) for i in present for e in runs[i].events]
        log, smooth = key_style(key)
        panel = Panel(key, curves, log, smooth, legend=False)  # the swatches above name the runs
        png = panel_png(panel, markers, size=CARD_PANEL, xmax=xmax, marker_style="tick")
        cards.append(f'<div class="card">{plot_img(png, key)}</div>')
    return f'<div class="grid">{"".join(cards)}</div>'


def _last_samples(runs: Sequence[Run], names: Sequence[str]) -> str:
    figures = []
    for run, name in zip(runs, names):
        img = sample_img(run.samples[-1], height=200) if run.samples else ""
        body = img or '<p class="empty">no samples</p>'
        figures.append(f"<figure>{body}<figcaption>{name}</figcaption></figure>")
    return f'<div class="strip">{"".join(figures)}</div>'


def _flatten(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
