"""Small chart helpers that return inline SVG strings (no external resources, no JavaScript).

Every chart is one ``<svg>`` element with a ``viewBox``, so it scales down on narrow screens.
Hover text uses SVG ``<title>`` children. Text passed in is HTML-escaped here; callers pass
plain strings. Colours come from CSS classes defined by :mod:`onnxq.report.html`, so the
charts follow the page's palette.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = [
    "MAX_POINT_MARKERS",
    "LayerPoint",
    "histogram_chart",
    "nice_ticks",
    "range_bars_chart",
    "sqnr_chart",
]

#: Above this many layers the SQNR chart draws its unflagged points as one ``<path>`` without
#: per-point hover text, which keeps a page for a very large model small.
MAX_POINT_MARKERS = 2000

#: Above this many channels a weight-range panel draws its bars as one ``<path>``.
_MAX_BAR_RECTS = 1024


@dataclass(frozen=True)
class LayerPoint:
    """One point of the per-layer SQNR chart.

    Attributes
    ----------
    sqnr_db
        The layer's SQNR in dB; ``None`` means infinite (quantized output identical to float).
    flagged
        Whether the layer is below the per-layer threshold (drawn in red).
    label
        Hover text (tensor, op type, value).
    """

    sqnr_db: float | None
    flagged: bool
    label: str


@dataclass(frozen=True)
class _Frame:
    """The plotting area of a chart inside its ``viewBox``."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:
        """The bottom edge (largest y)."""
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        """The top edge (smallest y)."""
        return self.top


def _linear(d0: float, d1: float, r0: float, r1: float) -> Callable[[float], float]:
    """A linear map from the domain ``[d0, d1]`` to the range ``[r0, r1]``."""
    span = d1 - d0
    if span == 0:
        return lambda v: (r0 + r1) / 2
    k = (r1 - r0) / span
    return lambda v: r0 + (v - d0) * k


def _n(v: float) -> str:
    """A coordinate with one decimal (trailing ``.0`` dropped) to keep the markup short."""
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (about ``count`` of them).

    Parameters
    ----------
    lo, hi
        The data range; swapped if reversed, widened if empty.
    count
        The wanted number of intervals.

    Returns
    -------
    list of float
        Ticks ``t0 <= lo`` ... ``tn >= hi`` spaced by 1, 2 or 5 times a power of ten.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if lo > hi:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9)
    ticks = [round(first * step, 12)]
    k = first
    while ticks[-1] < hi - step * 1e-9 and len(ticks) < 50:
        k += 1
        ticks.append(round(k * step, 12))
    return ticks


def _tick_text(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:.6g}"


def _open(frame: _Frame, css_class: str, label: str, attrs: str = "") -> str:
    return (
        f'<svg class="chart {css_class}" viewBox="0 0 {_n(frame.width)} {_n(frame.height)}" '
        f'width="{_n(frame.width)}" height="{_n(frame.height)}" role="img" '
        f'aria-label="{escape(label)}"{attrs}>'
    )


def _y_axis(
    frame: _Frame,
    ticks: Sequence[float],
    y: Callable[[float], float],
    text: Callable[[float], str] = _tick_text,
) -> list[str]:
    """Horizontal grid lines (one path) and tick labels (``text`` of each tick) left of it."""
    grid = "".join(f"M{_n(frame.x0)} {_n(y(t))}H{_n(frame.x1)}" for t in ticks)
    parts = [f'<path class="grid" d="{grid}"/>']
    parts.extend(
        f'<text class="tick" x="{_n(frame.x0 - 6)}" y="{_n(y(t) + 3.5)}" '
        f'text-anchor="end">{escape(text(t))}</text>'
        for t in ticks
    )
    return parts


def _x_axis(frame: _Frame, ticks: Sequence[float], x: Callable[[float], float]) -> list[str]:
    """The bottom axis line, tick marks (one path) and tick labels."""
    marks = "".join(f"M{_n(x(t))} {_n(frame.y0)}v4" for t in ticks)
    parts = [
        f'<path class="axis" d="M{_n(frame.x0)} {_n(frame.y0)}H{_n(frame.x1)}{marks}"/>',
    ]
    parts.extend(
        f'<text class="tick" x="{_n(x(t))}" y="{_n(frame.y0 + 16)}" '
        f'text-anchor="middle">{escape(_tick_text(t))}</text>'
        for t in ticks
    )
    return parts


def _axis_titles(frame: _Frame, x_title: str, y_title: str) -> list[str]:
    cx = (frame.x0 + frame.x1) / 2
    cy = (frame.y0 + frame.y1) / 2
    return [
        f'<text class="axis-title" x="{_n(cx)}" y="{_n(frame.height - 4)}" '
        f'text-anchor="middle">{escape(x_title)}</text>',
        f'<text class="axis-title" transform="translate(12 {_n(cy)}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_title)}</text>',
    ]


def sqnr_chart(
    points: Sequence[LayerPoint],
    threshold_db: float | None = None,
    *,
    width: float = 960,
    height: float = 300,
    chart_id: str = "sqnr-chart",
) -> str:
    """The per-layer SQNR chart: layer index (topological order) against SQNR in dB.

    Parameters
    ----------
    points
        One point per layer, in topological order.
    threshold_db
        The per-layer threshold, drawn as a dashed line (omitted when ``None``).
    width, height
        The chart's size in CSS pixels (and ``viewBox`` units).
    chart_id
        The ``id`` of the ``<svg>`` element.

    Returns
    -------
    str
        An ``<svg>`` element. Each layer is a ``circle.pt`` with a ``<title>`` (flagged ones
        also ``.flag``, infinite ones ``.inf`` at the top band) while there are at most
        :data:`MAX_POINT_MARKERS` layers; beyond that unflagged points are one ``path.dots``.
    """
    frame = _Frame(width, height, left=58, right=18, top=44, bottom=42)
    finite = [p.sqnr_db for p in points if p.sqnr_db is not None]
    lo = min(finite, default=0.0)
    hi = max(finite, default=1.0)
    if threshold_db is not None:
        lo, hi = min(lo, threshold_db), max(hi, threshold_db)
    y_ticks = nice_ticks(lo, hi, 5)
    inf_band = frame.y1 - 12  # infinite SQNR sits in a band above the plotted range
    y = _linear(y_ticks[0], y_ticks[-1], frame.y0, frame.y1)
    n = len(points)
    x = _linear(0, max(n - 1, 1), frame.x0 + 4, frame.x1 - 4)
    x_ticks = [t for t in nice_ticks(0, max(n - 1, 1), 8) if t == int(t) and t <= max(n - 1, 0)]

    parts = [_open(frame, "sqnr", "Per-layer SQNR in dB by layer index", f' id="{chart_id}"')]
    parts += _y_axis(frame, y_ticks, y)
    parts += _x_axis(frame, x_ticks, x)
    parts += _axis_titles(frame, "layer index (topological order)", "SQNR (dB)")
    if any(p.sqnr_db is None for p in points):
        parts.append(
            f'<text class="tick inf-label" x="{_n(frame.x0 - 6)}" y="{_n(inf_band + 4)}" '
            f'text-anchor="end">∞</text>'
            f'<path class="grid inf-grid" d="M{_n(frame.x0)} {_n(inf_band)}H{_n(frame.x1)}"/>'
        )
    if threshold_db is not None:
        ty = y(threshold_db)
        parts.append(
            f'<path class="threshold" d="M{_n(frame.x0)} {_n(ty)}H{_n(frame.x1)}"/>'
            f'<text class="threshold-label" x="{_n(frame.x1 - 2)}" y="{_n(ty - 5)}" '
            f'text-anchor="end">threshold {escape(f"{threshold_db:g}")} dB</text>'
        )
    line = " ".join(
        f"{_n(x(i))},{_n(y(p.sqnr_db))}" for i, p in enumerate(points) if p.sqnr_db is not None
    )
    if line:
        parts.append(f'<polyline class="trace" points="{line}"/>')

    markers = n <= MAX_POINT_MARKERS
    dots: list[str] = []
    for i, p in enumerate(points):
        cy = inf_band if p.sqnr_db is None else y(p.sqnr_db)
        if not markers and not p.flagged:
            dots.append(f"M{_n(x(i))} {_n(cy)}h0")
            continue
        css = "pt" + (" flag" if p.flagged else "") + (" inf" if p.sqnr_db is None else "")
        radius = 3.5 if p.flagged else 2.6
        parts.append(
            f'<circle class="{css}" cx="{_n(x(i))}" cy="{_n(cy)}" r="{radius}">'
            f"<title>{escape(p.label)}</title></circle>"
        )
    if dots:
        parts.append(f'<path class="dots" d="{"".join(dots)}"/>')
    parts.append(_sqnr_legend(frame, threshold_db is not None))
    parts.append("</svg>")
    return "".join(parts)


def _sqnr_legend(frame: _Frame, with_threshold: bool) -> str:
    x0 = frame.x0
    items = [
        f'<circle class="pt" cx="{_n(x0 + 4)}" cy="10" r="3"/>'
        f'<text class="legend" x="{_n(x0 + 12)}" y="14">layer</text>',
        f'<circle class="pt flag" cx="{_n(x0 + 64)}" cy="10" r="3.5"/>'
        f'<text class="legend" x="{_n(x0 + 72)}" y="14">below threshold</text>',
        f'<circle class="pt inf" cx="{_n(x0 + 184)}" cy="10" r="3"/>'
        f'<text class="legend" x="{_n(x0 + 192)}" y="14">identical (∞ dB)</text>',
    ]
    if with_threshold:
        items.append(
            f'<path class="threshold" d="M{_n(x0 + 306)} 10h22"/>'
            f'<text class="legend" x="{_n(x0 + 334)}" y="14">threshold</text>'
        )
    return f'<g class="legend-box">{"".join(items)}</g>'


def histogram_chart(
    edges: Sequence[float],
    counts: Sequence[float],
    encoding_min: float | None = None,
    encoding_max: float | None = None,
    *,
    title: str = "",
    width: float = 460,
    height: float = 220,
) -> str:
    """A value histogram with the encoding's ``[min, max]`` marked and the clipped tails shaded.

    Both a linear and a log-scale set of bars are drawn (``g.bars.lin`` and ``g.bars.log``);
    the page's CSS shows one of them, so a reader can switch without re-rendering.

    Parameters
    ----------
    edges
        ``n + 1`` increasing bin edges.
    counts
        ``n`` bin counts.
    encoding_min, encoding_max
        The quantization grid's range; values outside it are clipped.
    title
        Accessible label of the chart.
    width, height
        The chart's size.

    Returns
    -------
    str
        An ``<svg class="chart hist">``; each non-empty bin is one ``rect.bar`` in each set.
    """
    frame = _Frame(width, height, left=50, right=12, top=14, bottom=40)
    nbins = min(len(counts), max(len(edges) - 1, 0))
    lo = edges[0] if nbins else 0.0
    hi = edges[nbins] if nbins else 1.0
    for bound in (encoding_min, encoding_max):
        if bound is not None:
            lo, hi = min(lo, bound), max(hi, bound)
    pad = (hi - lo) * 0.02 or 1.0
    x_ticks = nice_ticks(lo - pad, hi + pad, 5)
    x = _linear(x_ticks[0], x_ticks[-1], frame.x0, frame.x1)
    top = max((c for c in counts[:nbins]), default=1) or 1

    parts = [_open(frame, "hist", title or "Value histogram")]
    parts += _x_axis(frame, x_ticks, x)
    parts.append(
        f'<text class="axis-title" x="{_n((frame.x0 + frame.x1) / 2)}" '
        f'y="{_n(frame.height - 4)}" text-anchor="middle">float value</text>'
    )
    if encoding_min is not None:
        parts.append(_shade(frame, frame.x0, x(encoding_min)))
    if encoding_max is not None:
        parts.append(_shade(frame, x(encoding_max), frame.x1))
    for scale in ("lin", "log"):
        parts.append(_bars(frame, edges, counts, nbins, x, top, scale))
    for bound, name, anchor, dx in (
        (encoding_min, "min", "start", 3),
        (encoding_max, "max", "end", -3),
    ):
        if bound is None:
            continue
        bx = x(bound)
        parts.append(
            f'<path class="enc" d="M{_n(bx)} {_n(frame.y1)}V{_n(frame.y0)}"/>'
            f'<text class="enc-label" x="{_n(bx + dx)}" y="{_n(frame.y1 + 10)}" '
            f'text-anchor="{anchor}">{name} {escape(_tick_text(bound))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _shade(frame: _Frame, xa: float, xb: float) -> str:
    xa, xb = max(xa, frame.x0), min(xb, frame.x1)
    if xb <= xa:
        return ""
    return (
        f'<rect class="clipped" x="{_n(xa)}" y="{_n(frame.y1)}" width="{_n(xb - xa)}" '
        f'height="{_n(frame.y0 - frame.y1)}"><title>clipped by the encoding</title></rect>'
    )


def _bars(
    frame: _Frame,
    edges: Sequence[float],
    counts: Sequence[float],
    nbins: int,
    x: Callable[[float], float],
    top: float,
    scale: str,
) -> str:
    if scale == "log":
        top_v = math.log10(1 + top)
        ticks = [float(t) for t in range(math.ceil(top_v) + 1)] if top_v > 0 else [0.0, 1.0]
        y = _linear(0, ticks[-1], frame.y0, frame.y1)
        # a tick t stands for the count 10**t (the bars are log10(1 + count) high)
        axis = _y_axis(frame, ticks, y, _count_text)
        title = "count (log)"
    else:
        ticks = nice_ticks(0, top, 4)
        y = _linear(0, ticks[-1], frame.y0, frame.y1)
        axis = _y_axis(frame, ticks, y)
        title = "count"
    rects = []
    for i in range(nbins):
        c = counts[i]
        if not c or c <= 0:
            continue
        xa, xb = x(edges[i]), x(edges[i + 1])
        yt = y(math.log10(1 + c) if scale == "log" else float(c))
        rects.append(
            f'<rect class="bar" x="{_n(xa)}" y="{_n(yt)}" width="{_n(max(xb - xa, 0.6))}" '
            f'height="{_n(frame.y0 - yt)}"/>'
        )
    label = (
        f'<text class="axis-title" transform="translate(11 {_n((frame.y0 + frame.y1) / 2)}) '
        f'rotate(-90)" text-anchor="middle">{title}</text>'
    )
    return f'<g class="bars {scale}">{"".join(axis)}{label}{"".join(rects)}</g>'


def _count_text(log_tick: float) -> str:
    """The count a log-scale tick stands for: 1, 10, 100, 1k ... 1M ..."""
    power = int(log_tick)
    for step, suffix in ((9, "G"), (6, "M"), (3, "k")):
        if power >= step:
            return f"{10 ** (power - step)}{suffix}"
    return str(10**power)


def range_bars_chart(
    mins: Sequence[float],
    maxs: Sequence[float],
    *,
    css_class: str,
    title: str,
    width: float = 460,
    height: float = 200,
) -> str:
    """Per-channel ``[min, max]`` bars (one vertical bar per output channel).

    Parameters
    ----------
    mins, maxs
        Per-channel minima and maxima (equal lengths; extra entries are ignored).
    css_class
        Extra class of the ``<svg>`` (``before`` or ``after`` picks the colour).
    title
        The panel's caption, drawn in the chart.
    width, height
        The chart's size.

    Returns
    -------
    str
        An ``<svg class="chart wrange ...">`` with one ``rect.bar`` per channel (one ``path.bar``
        for more than 1,024 channels).
    """
    frame = _Frame(width, height, left=50, right=12, top=24, bottom=40)
    n = min(len(mins), len(maxs))
    lo = min(min(mins[:n], default=0.0), 0.0)
    hi = max(max(maxs[:n], default=0.0), 0.0)
    y_ticks = nice_ticks(lo, hi, 4)
    y = _linear(y_ticks[0], y_ticks[-1], frame.y0, frame.y1)
    x = _linear(0, max(n, 1), frame.x0 + 2, frame.x1 - 2)
    x_ticks = [t for t in nice_ticks(0, max(n - 1, 1), 5) if t == int(t) and t <= max(n - 1, 0)]
    step = (frame.x1 - frame.x0 - 4) / max(n, 1)
    bar_w = max(step * 0.7, 0.5)

    parts = [_open(frame, f"wrange {css_class}", title)]
    parts.append(f'<text class="panel-title" x="{_n(frame.x0)}" y="14">{escape(title)}</text>')
    parts += _y_axis(frame, y_ticks, y)
    parts += _x_axis(frame, x_ticks, lambda t: x(t + 0.5))
    parts.append(
        f'<text class="axis-title" x="{_n((frame.x0 + frame.x1) / 2)}" '
        f'y="{_n(frame.height - 4)}" text-anchor="middle">output channel</text>'
    )
    if lo < 0 < hi:
        parts.append(f'<path class="zero" d="M{_n(frame.x0)} {_n(y(0))}H{_n(frame.x1)}"/>')
    if n > _MAX_BAR_RECTS:
        d = "".join(f"M{_n(x(i + 0.5))} {_n(y(maxs[i]))}V{_n(y(mins[i]))}" for i in range(n))
        parts.append(f'<path class="bar" stroke-width="{_n(bar_w)}" d="{d}"/>')
    else:
        for i in range(n):
            top, bottom = y(maxs[i]), y(mins[i])
            parts.append(
                f'<rect class="bar" x="{_n(x(i + 0.5) - bar_w / 2)}" y="{_n(top)}" '
                f'width="{_n(bar_w)}" height="{_n(max(bottom - top, 0.5))}"/>'
            )
    parts.append("</svg>")
    return "".join(parts)
