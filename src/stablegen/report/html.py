"""The run report: one self-contained HTML page per run directory (report.html).

Curves (losses, gradient norms, learning rates, health signals, eval metrics) with the stability
events as vertical markers, sample grids over training, the events table, the eval table and the
resolved recipe. Images are inline PNG data URIs and the page sets a Content-Security-Policy that
forbids loading anything else, so it opens the same from a mail attachment as from the run folder.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stablegen.report.plots import (
    DROPPED_COLOR,
    LINE_COLORS,
    Curve,
    Marker,
    Panel,
    action_color,
    panel_png,
    timeline_png,
)
from stablegen.report.runs import Run, SampleImage, load_run

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
MAX_STRIP = 8  # sample grids shown over training, plus the last one
MAX_EVENT_ROWS = 300  # longer event logs show their first and last half of this
MAX_IMAGE_SIDE = 1024  # larger sample pictures are scaled down before inlining
CARD_PANEL = (5.2, 2.6)  # inches of one curve card
GROUPS = [  # (key prefix, card title, log-scale y, smoothed), in page order
    ("loss/", "Loss", False, True),
    ("grad_norm/", "Gradient norm", True, True),
    ("lr/", "Learning rate", False, False),
    ("health/", "", False, True),
    ("eval/", "", False, False),
    ("", "", False, True),  # anything else, one card per key
]

CSS = """
:root{--fg:#212529;--muted:#6c757d;--line:#e9ecef;--bg:#f4f5f7;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
 font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1320px;margin:0 auto;padding:20px 24px 40px}
a{color:#1971c2;text-decoration:none}
h1{font-size:24px;margin:2px 0 2px;word-break:break-all}
h2{font-size:16px;margin:28px 0 10px;display:flex;align-items:baseline;gap:10px}
h2 small{font-weight:normal;color:var(--muted);font-size:13px}
.kicker{font-size:12px;letter-spacing:.08em;text-transform:uppercase;color:var(--muted)}
.desc{color:#495057;margin:0 0 12px}
.top{display:flex;gap:20px;align-items:stretch;background:var(--card);border:1px solid var(--line);
 border-radius:12px;padding:18px 20px}
.top .info{flex:1;min-width:0}
.hero{margin:0;text-align:center;flex:0 0 auto}
.hero img{height:220px;max-width:320px;object-fit:contain;border-radius:6px;border:1px solid var(--line)}
figcaption{font-size:12px;color:var(--muted)}
.tiles{display:flex;flex-wrap:wrap;gap:8px}
.tile{border:1px solid var(--line);border-radius:8px;padding:5px 11px;min-width:84px;background:#fcfcfd}
.tile .k{font-size:11px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.tile .v{font-size:17px;font-weight:600;font-variant-numeric:tabular-nums;white-space:nowrap}
.tile .s{font-size:11px;color:var(--muted)}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;color:#fff;
 white-space:nowrap}
.st-finished{background:#2f9e44}.st-stopped{background:#e03131}.st-interrupted{background:#f08c00}
.st-other{background:#868e96}
.message{margin:10px 0 0;color:#495057;font-size:13px}
nav{margin:14px 2px 0;font-size:13px;color:var(--muted)}
nav a{margin-right:14px}
.legend{font-size:12px;color:var(--muted);display:flex;flex-wrap:wrap;gap:14px;align-items:center}
.legend i{display:inline-block;width:3px;height:13px;vertical-align:-2px;margin-right:5px}
.legend .x{color:#e03131;font-weight:700;margin-right:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 12px}
.card img.plot{display:block;width:100%;height:auto}
.strip{display:flex;flex-wrap:wrap;gap:12px}
.strip figure{margin:0;flex:0 0 auto;text-align:center}
.strip img{height:140px;border-radius:6px;border:1px solid var(--line);background:#fff}
img.px{image-rendering:pixelated}
table{border-collapse:collapse;width:100%;font-size:13px}
th{font-weight:600;color:#495057;text-align:left;border-bottom:2px solid var(--line);padding:5px 8px}
td{border-bottom:1px solid var(--line);padding:4px 8px;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.ev{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:#495057}
tr.gap td{text-align:center;color:var(--muted);font-style:italic}
.best{font-weight:700}
.meta{font-size:12px;color:var(--muted);margin:6px 0 0}
.empty{color:var(--muted);font-style:italic;margin:4px 0}
pre{background:#f8f9fa;border:1px solid var(--line);border-radius:8px;padding:12px 14px;overflow:auto;margin:0;
 font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
details summary{cursor:pointer;color:#495057;margin:6px 0}
footer{margin-top:30px;font-size:12px;color:var(--muted)}
.swatch{display:inline-block;width:11px;height:11px;border-radius:3px;margin-right:6px;vertical-align:-1px}
"""


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of one run to `out` (default RUN/report.html); return its path."""
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.path / "report.html"
    write_atomic(path, render_report(run))
    return path


def render_report(run: Run) -> str:
    xmax = max(run.steps, 1)
    sections = [
        _header(run),
        '<nav><a href="#curves">Curves</a><a href="#samples">Samples</a><a href="#events">Events</a>'
        '<a href="#eval">Evaluation</a><a href="#recipe">Recipe</a></nav>',
        f'<h2 id="curves">Training curves <small>{_marker_legend(run)}</small></h2>',
        _curve_cards(run, xmax),
        f'<h2 id="samples">Samples over training <small>{_count(run.samples, "grid")}</small></h2>',
        _sample_strip(run.samples),
        f'<h2 id="events">Stability events <small>{_count(run.events, "event")}</small></h2>',
        _events_section(run.events, xmax),
        '<h2 id="eval">Evaluation</h2>',
        _eval_section(run),
        '<h2 id="recipe">Resolved recipe</h2>',
        f"<pre>{esc(run.recipe_text)}</pre>" if run.recipe_text else '<p class="empty">No recipe.yaml in this run.</p>',
    ]
    return page(f"{run.name} · stablegen report", "\n".join(sections), source=str(run.path))


# ---------------------------------------------------------------- sections


def _header(run: Run) -> str:
    counts = run.event_counts
    breakdown = ", ".join(f"{d} {n}" for d, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    tiles = [
        tile("Status", status_badge(run.status)),
        tile("Steps", f"{run.steps:,}"),
        tile("Wall time", fmt_duration(run.wall_time)),
        tile("Events", str(sum(counts.values())), breakdown or "none"),
        tile("Rollbacks", str(run.rollbacks)),
    ]
    if run.family:
        tiles.insert(1, tile("Model", esc(run.family), esc(run.data_name)))
    for name, value in list(run.eval_metrics().items())[:4]:
        tiles.append(tile(esc(name), fmt_num(value), "eval"))
    description = run.description if run.describes_its_data else ""  # a built-in's text names its own data
    subtitle = " — ".join(esc(s) for s in (run.recipe_name, description, f"data: {run.data_label}"
                                             if run.data_label else "") if s)
    message = (run.summary or {}).get("message")
    hero = ""
    if run.samples:
        last = run.samples[-1]
        img = sample_img(last, height=220)
        if img:
            hero = f'<figure class="hero">{img}<figcaption>{_sample_caption(last)}</figcaption></figure>'
    return (
        '<header class="top"><div class="info"><div class="kicker">stablegen run report</div>'
        f"<h1>{esc(run.name)}</h1>" + (f'<p class="desc">{subtitle}</p>' if subtitle else "")
        + f'<div class="tiles">{"".join(tiles)}</div>'
        + (f'<p class="message">{esc(str(message))}</p>' if message else "")
        + f"</div>{hero}</header>"
    )


def _curve_cards(run: Run, xmax: float) -> str:
    markers = [Marker(float(e["step"]), action_color(str(e.get("action", "")))) for e in run.events]
    cards = []
    for title, curves, log, smooth in curve_groups(run):
        png = panel_png(Panel(title, curves, log, smooth), markers, size=CARD_PANEL, xmax=xmax)
        cards.append(f'<div class="card">{plot_img(png, title)}</div>')
    if not cards:
        return '<p class="empty">No metrics logged (metrics.jsonl is missing or empty).</p>'
    return f'<div class="grid">{"".join(cards)}</div>'


def curve_groups(run: Run) -> list[tuple[str, list[Curve], bool, bool]]:
    """Cards in page order: (title, curves, log y, smoothed). Phases share a card; signals get one each."""
    cards = []
    for prefix, title, log, smooth in GROUPS:
        mine = [k for k in run.keys() if _group(k)[0] == prefix]
        if title and mine:  # one card, a curve per phase
            curves = [Curve(k[len(prefix) :], run.series(k), LINE_COLORS[i % len(LINE_COLORS)]) for i, k in enumerate(mine)]
            cards.append((title, curves, log, smooth))
        elif mine:
            cards += [(k, [Curve(k, run.series(k), LINE_COLORS[0])], log, smooth) for k in mine]
    return cards


def ordered_keys(keys: Sequence[str]) -> list[str]:
    """Metric keys in page order: losses, gradient norms, learning rates, health, eval, the rest."""
    order = [prefix for prefix, *_ in GROUPS]
    return sorted(keys, key=lambda k: order.index(_group(k)[0]))  # stable: first-seen order within a group


def key_style(key: str) -> tuple[bool, bool]:
    """(log y, smoothed) for a metric key."""
    return _group(key)[2:]


def _group(key: str) -> tuple[str, str, bool, bool]:
    for group in GROUPS:
        if key.startswith(group[0]):
            return group
    return GROUPS[-1]


def _marker_legend(run: Run) -> str:
    """What the marks on the curves mean, for the marks this run has."""
    counts = Counter(str(e.get("action", "?")) for e in run.events)
    items = [f'<span><i style="background:{action_color(a)}"></i>{esc(a)} ({n})</span>' for a, n in counts.items()]
    series = [run.series(k) for k in run.keys()]
    if any((~np.isfinite(s.values)).any() for s in series):
        items.append('<span><b class="x">×</b>non-finite value</span>')
    if any(len(s.dropped_steps) for s in series):
        items.append(f'<span><i style="background:{DROPPED_COLOR}"></i>logged before a rollback</span>')
    return f'<span class="legend">{"".join(items)}</span>' if items else ""


def _sample_strip(samples: Sequence[SampleImage]) -> str:
    if not samples:
        return '<p class="empty">No sample grids in this run.</p>'
    figures = []
    for s in pick_strip(samples):
        img = sample_img(s, height=140)
        if img:
            figures.append(f"<figure>{img}<figcaption>{_sample_caption(s)}</figcaption></figure>")
    if not figures:
        return '<p class="empty">The sample pictures of this run could not be read.</p>'
    return f'<div class="strip">{"".join(figures)}</div>'


def pick_strip(samples: Sequence[SampleImage], k: int = MAX_STRIP) -> list[SampleImage]:
    """At most k step grids evenly spaced over training, always the last one, then final.png."""
    steps = [s for s in samples if s.step is not None]
    final = [s for s in samples if s.step is None]
    if len(steps) > k + 1:
        idx = np.unique(np.linspace(0, len(steps) - 2, k).round().astype(int))
        steps = [steps[i] for i in idx] + [steps[-1]]
    return steps + final


def _events_section(events: Sequence[dict], xmax: float) -> str:
    if not events:
        return '<p class="empty">No stability events: the guard saw nothing to act on.</p>'
    rows = [_event_row(e) for e in events]
    if len(rows) > MAX_EVENT_ROWS:
        half = MAX_EVENT_ROWS // 2
        gap = f'<tr class="gap"><td colspan="6">{len(rows) - 2 * half:,} events not shown</td></tr>'
        rows = rows[:half] + [gap] + rows[-half:]
    timeline = plot_img(timeline_png(events, xmax), "events by detector over training")
    return (
        f'<div class="card">{timeline}</div><div class="card" style="margin-top:14px"><table>'
        '<tr><th class="num">step</th><th class="num">time</th><th>detector</th><th>action</th>'
        f'<th>message</th><th>evidence</th></tr>{"".join(rows)}</table></div>'
    )


def _event_row(e: dict) -> str:
    evidence = e.get("evidence")
    if isinstance(evidence, dict):
        evidence = " ".join(f"{esc(str(k))}={fmt_num(v)}" for k, v in evidence.items())
    else:
        evidence = esc(json.dumps(evidence)) if evidence is not None else ""
    action = str(e.get("action", "?"))
    time = e.get("time")
    return (
        f'<tr><td class="num">{fmt_num(e.get("step"))}</td>'
        f'<td class="num">{fmt_duration(time) if isinstance(time, (int, float)) else ""}</td>'
        f'<td>{esc(str(e.get("detector", "?")))}</td>'
        f'<td><span class="badge" style="background:{action_color(action)}">{esc(action)}</span></td>'
        f'<td>{esc(str(e.get("message", "")))}</td><td class="ev">{evidence}</td></tr>'
    )


def _eval_section(run: Run) -> str:
    metrics = run.eval_metrics()
    if not metrics:
        return '<p class="empty">No evaluation for this run (no eval.json, no eval/* metrics logged).</p>'
    # the real-vs-real floor (real training images against the same reference) beside fid and kid
    floors = {k: metrics.pop(f"{k}_floor") for k in ("fid", "kid") if f"{k}_floor" in metrics}
    rows = ""
    for k, v in metrics.items():
        floor = f'<td class="num">{fmt_num(floors[k]) if k in floors else ""}</td>' if floors else ""
        rows += f'<tr><td>{esc(k)}</td><td class="num">{fmt_num(v)}</td>{floor}</tr>'
    if run.eval and isinstance(run.eval.get("metrics"), dict):
        e = run.eval
        parts = [f"against {esc(run.eval_against)}"] if run.eval_against else []
        parts += [f"{k} = {fmt_num(e[k])}" for k in ("n", "step") if k in e]
        if e.get("features"):
            parts.append(f"features: {esc(str(e['features']))}")
        if "ema" in e:
            parts.append("EMA weights" if e["ema"] else "raw weights")
        meta = "From eval.json: " + " · ".join(parts)
    else:
        meta = "Last values logged in metrics.jsonl (there is no eval.json)."
    if floors:
        meta += (" · real-vs-real floor: the same metric of as many real training images as samples against the "
                 "same reference, in the same features")
    floor_head = '<th class="num">real-vs-real floor</th>' if floors else ""
    return (
        '<div class="card" style="max-width:560px"><table><tr><th>metric</th><th class="num">value</th>'
        f'{floor_head}</tr>{rows}</table><p class="meta">{meta}</p></div>'
    )


def _sample_caption(s: SampleImage) -> str:
    return "final" if s.step is None else f"step {s.step:,}"


def _count(items: Sequence, noun: str) -> str:
    return f"{len(items):,} {noun}{'' if len(items) == 1 else 's'}" if items else ""


# ---------------------------------------------------------------- shared pieces (compare uses them)


def page(title: str, body: str, source: str = "") -> str:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    origin = f" from {esc(source)}" if source else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n"
        f"<footer>Written by stablegen {_version()} on {stamp}{origin}.</footer></main></body></html>\n"
    )


def tile(key: str, value: str, sub: str = "") -> str:
    """A header tile; key, value and sub are HTML."""
    sub = f'<div class="s">{sub}</div>' if sub else ""
    return f'<div class="tile"><div class="k">{key}</div><div class="v">{value}</div>{sub}</div>'


def status_badge(status: str) -> str:
    cls = status if status in ("finished", "stopped", "interrupted") else "other"
    return f'<span class="badge st-{cls}">{esc(status)}</span>'


def plot_img(png: bytes, alt: str) -> str:
    return f'<img class="plot" alt="{esc(alt)}" src="{png_uri(png)}">'


def sample_img(sample: SampleImage, height: int) -> str:
    """An inline <img> of a sample picture shown `height` px tall; "" (with a warning) if unreadable."""
    image = load_image(sample.path)
    if image is None:
        return ""
    png, w, h = image
    sharp = ' class="px"' if h < height else ""  # upscaled pixel grids stay crisp
    return f'<img{sharp} alt="{esc(_sample_caption(sample))}" width="{w}" height="{h}" style="height:{height}px;width:auto" src="{png_uri(png)}">'


def load_image(path: Path) -> tuple[bytes, int, int] | None:
    """PNG bytes, width and height of a picture, scaled down to MAX_IMAGE_SIDE; None if it does not decode."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if max(im.size) <= MAX_IMAGE_SIDE and im.format == "PNG":
                return path.read_bytes(), im.width, im.height
            im.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            return buf.getvalue(), im.width, im.height
    except (OSError, ValueError) as e:
        warnings.warn(f"{path}: not a readable image ({e}); left out of the report", stacklevel=2)
        return None


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fmt_num(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return esc(str(v))
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:.4g}"
    return esc(json.dumps(v) if isinstance(v, (dict, list)) else str(v))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stablegen")
    except PackageNotFoundError:
        return ""

