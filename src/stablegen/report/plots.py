"""Training curves as PNG bytes (matplotlib, Agg canvas; pyplot and the global backend are left alone).

Noisy curves are drawn as a robust moving average (rolling median, then a short rolling mean)
over the raw values drawn faintly behind it; long curves are downsampled into buckets whose
min-max band keeps every spike visible. Non-finite values are marked with red crosses on the top
edge, values a rollback made the trainer log again are drawn in grey, and stability events are
vertical markers coloured by action.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter

from stablegen.report.runs import Series

ACTION_COLORS = {"warn": "#f59f00", "skip": "#f76707", "rollback": "#ae3ec9", "stop": "#e03131"}
UNKNOWN_ACTION_COLOR = "#868e96"
LINE_COLORS = ["#1971c2", "#2b8a3e", "#495057", "#0b7285", "#5f3dc4", "#a61e4d", "#5c940d", "#862e9c"]
RUN_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # matplotlib's tab10, one per compared run
NONFINITE_COLOR = "#e03131"
DROPPED_COLOR = "#adb5bd"
MAX_POINTS = 1200  # a curve longer than this is drawn as this many buckets
DPI = 144

_STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#adb5bd",
    "axes.grid": True,
    "grid.color": "#e9ecef",
    "grid.linewidth": 0.8,
    "xtick.color": "#495057",
    "ytick.color": "#495057",
    "axes.labelcolor": "#495057",
    "legend.frameon": False,
    "legend.fontsize": 7,
}


@dataclass
class Curve:
    label: str
    series: Series
    color: str


@dataclass
class Panel:
    title: str
    curves: list[Curve]
    log: bool = False  # log-scale y; non-positive values are left out
    smooth: bool = True  # robust moving average over a faint raw curve; False: points joined by lines
    legend: bool = True  # name the curves above the panel when there are several


@dataclass
class Marker:
    step: float
    color: str


def action_color(action: str) -> str:
    return ACTION_COLORS.get(action, UNKNOWN_ACTION_COLOR)


def panel_png(
    panel: Panel,
    markers: Sequence[Marker] = (),
    *,
    size: tuple[float, float] = (5.2, 2.6),
    xmax: float | None = None,
    marker_style: Literal["line", "tick"] = "line",
) -> bytes:
    """One panel of curves against the step, with `markers` (stability events); PNG bytes.

    marker_style "line" draws full-height vertical lines (one run's events); "tick" draws short
    ticks on the bottom edge (several runs' events on one panel, coloured by run).
    """
    if marker_style not in ("line", "tick"):
        raise ValueError(f"marker_style must be 'line' or 'tick', got {marker_style!r}")
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=size)
        # Fixed margins in inches (constrained layout would double the drawing time): tick labels
        # stay short (scientific notation on linear axes, plain numbers on log axes).
        w, h = size
        fig.subplots_adjust(left=0.55 / w, right=1 - 0.12 / w, bottom=0.36 / h, top=1 - 0.34 / h)
        ax = fig.add_subplot()
        _draw_markers(ax, markers, marker_style)
        _draw_panel(ax, panel)
        if xmax:
            ax.set_xlim(0, xmax)
        return _png(fig)


def timeline_png(events: Sequence[dict], xmax: float | None = None, width: float = 12.0) -> bytes:
    """One row per detector, a tick per event coloured by its action."""
    detectors: dict[str, int] = {}
    for e in events:
        detectors[str(e.get("detector", "?"))] = detectors.get(str(e.get("detector", "?")), 0) + 1
    rows = {d: i for i, d in enumerate(detectors)}
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(width, 0.45 + 0.3 * len(rows)), layout="constrained")
        ax = fig.subplots()
        by_action: dict[str, tuple[list[float], list[int]]] = {}
        for e in events:
            xs, ys = by_action.setdefault(str(e.get("action", "?")), ([], []))
            xs.append(float(e["step"]))
            ys.append(rows[str(e.get("detector", "?"))])
        for action, (xs, ys) in by_action.items():
            ax.scatter(xs, ys, marker="|", s=140, linewidths=1.6, color=action_color(action), label=action)
        ax.set_yticks(range(len(rows)), [f"{d} ({n})" for d, n in detectors.items()])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.grid(axis="y", visible=False)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_xlabel("step")
        if xmax:
            ax.set_xlim(0, xmax)
        return _png(fig)


def robust_smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Rolling median over `window` points (robust to spikes), then a rolling mean over half of it.

    The mean removes the median's staircase; windows shrink at the ends. y must be finite.
    """
    return _rolling(_rolling(y, window, np.median), max(1, window // 2), np.mean)


def smoothing_window(n: int) -> int:
    """An odd window of about n / 15 points, between 1 and 101."""
    return int(min(101, max(1, n // 15)) | 1)


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS):
    """Bucket a long curve into max_points buckets: (x at bucket centres, median, min, max).

    Returns (x, y, None, None) unchanged when it is short enough.
    """
    n = len(x)
    if n <= max_points:
        return x, y, None, None
    edges = np.linspace(0, n, max_points + 1).astype(int)
    starts = edges[:-1]
    lo = np.minimum.reduceat(y, starts)
    hi = np.maximum.reduceat(y, starts)
    mid = np.array([np.median(y[a:b]) for a, b in zip(edges[:-1], edges[1:])])
    return x[(edges[:-1] + edges[1:] - 1) // 2], mid, lo, hi


def _rolling(y: np.ndarray, window: int, reduce) -> np.ndarray:
    if window <= 1 or len(y) < 3:
        return y.copy()
    window = min(window | 1, (len(y) - 1) | 1)  # odd and centred
    half = window // 2
    out = np.empty_like(y)
    # (n - 2 half, window) full windows in the middle; the ends use what is there.
    out[half : len(y) - half] = reduce(np.lib.stride_tricks.sliding_window_view(y, window), axis=1)
    for i in list(range(half)) + list(range(len(y) - half, len(y))):
        out[i] = reduce(y[max(0, i - half) : i + half + 1])
    return out


def _draw_panel(ax, panel: Panel) -> None:
    shown: list[np.ndarray] = []
    nonfinite_labelled = False
    for curve in panel.curves:
        shown.append(_draw_curve(ax, curve, panel))
    for curve in panel.curves:  # after the curves, so the legend names them first
        bad = ~np.isfinite(curve.series.values)
        if bad.any():
            ax.scatter(
                curve.series.steps[bad], np.full(int(bad.sum()), 0.97), transform=ax.get_xaxis_transform(),
                marker="x", s=16, linewidths=1.2, color=NONFINITE_COLOR, zorder=6, clip_on=False,
                label=None if nonfinite_labelled else "non-finite",
            )
            nonfinite_labelled = True
    values = np.concatenate(shown) if shown else np.zeros(0)
    if panel.log and len(values):
        _log_axis(ax, values)
    elif not panel.log:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        _clip_outliers(ax, values)
    if not len(values):
        message = "no positive finite values" if panel.log else "no finite values"
        ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="#868e96")
    ax.set_title(panel.title)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    if panel.legend and (len(panel.curves) > 1 or nonfinite_labelled):
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=min(5, len(panel.curves) + nonfinite_labelled),
                  borderaxespad=0.1, handlelength=1.4, columnspacing=1.0)


def _draw_curve(ax, curve: Curve, panel: Panel) -> np.ndarray:
    """Draw one curve; return the finite values it shows, rolled-back ones included (for the y-limits)."""
    s = curve.series
    forward, back = (np.log10, lambda v: 10.0**v) if panel.log else (lambda v: v, lambda v: v)
    keep = np.isfinite(s.values) & ((s.values > 0) if panel.log else True)
    x, y = s.steps[keep], s.values[keep]
    dkeep = np.isfinite(s.dropped_values) & ((s.dropped_values > 0) if panel.log else True)
    if dkeep.any():
        dx, dy = s.dropped_steps[dkeep], s.dropped_values[dkeep]
        breaks = np.flatnonzero(np.diff(dx) <= 0) + 1  # one line per abandoned stretch
        ax.plot(np.insert(dx, breaks, np.nan), np.insert(dy, breaks, np.nan), color=DROPPED_COLOR, lw=0.9, zorder=2)
    shown = np.concatenate([y, s.dropped_values[dkeep]])
    if len(x) == 0:
        return shown
    if not panel.smooth or len(x) < 16:
        ax.plot(x, y, color=curve.color, lw=1.4, marker="o" if len(x) <= 40 else None, ms=3, label=curve.label, zorder=4)
        return shown
    xb, mid, lo, hi = downsample(x, forward(y))
    if lo is None:
        ax.plot(x, y, color=curve.color, lw=0.8, alpha=0.28, zorder=3)
    else:
        ax.fill_between(xb, back(lo), back(hi), color=curve.color, alpha=0.15, lw=0, zorder=3)
    ax.plot(xb, back(robust_smooth(mid, smoothing_window(len(mid)))), color=curve.color, lw=1.6, label=curve.label, zorder=4)
    return shown


def _log_axis(ax, values: np.ndarray) -> None:
    """Log y with plain tick labels (0.5, 2, 100); minor ticks labelled when the range is under two decades."""
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    decades = np.log10(values.max() / values.min())
    ax.yaxis.set_minor_formatter(plain if decades < 2 else NullFormatter())


def _clip_outliers(ax, values: np.ndarray) -> None:
    """Zoom onto the bulk of the values when a few are far out, and say so."""
    if len(values) < 20:
        return
    lo, hi = np.quantile(values, [0.01, 0.99])
    span = (hi - lo) or abs(hi) or 1.0
    vmin, vmax = float(values.min()), float(values.max())
    if vmax <= hi + 3 * span and vmin >= lo - 3 * span:
        return
    ax.set_ylim(max(vmin, lo - 0.3 * span), min(vmax, hi + 0.3 * span))
    ax.text(
        0.99, 0.02, f"y clipped; range [{vmin:.3g}, {vmax:.3g}]", transform=ax.transAxes,
        ha="right", va="bottom", fontsize=7, color="#868e96",
    )


def _draw_markers(ax, markers: Sequence[Marker], style: str) -> None:
    by_color: dict[str, list[float]] = {}
    for m in markers:
        by_color.setdefault(m.color, []).append(m.step)
    for color, steps in by_color.items():
        if style == "line":
            ax.vlines(steps, 0, 1, transform=ax.get_xaxis_transform(), colors=color, lw=0.9, alpha=0.55, zorder=1)
        else:
            ax.vlines(steps, 0, 0.07, transform=ax.get_xaxis_transform(), colors=color, lw=1.3, alpha=0.9, zorder=5)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()
