"""Server-side charts: SVG from matplotlib, inlined in the page, no network and no JavaScript.

Every chart on a dashboard also has its numbers in a table and a CSV download
(`csv_text`), so nothing is only a picture. matplotlib is imported on first
use: web processes that never draw a chart do not pay for it.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True)
class Series:
    """One line: x values (numbers or datetimes) and y values of the same length."""

    name: str
    x: Sequence
    y: Sequence[float | None]
    dashed: bool = False
    markers: bool = False

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"series {self.name!r}: {len(self.x)} x values but {len(self.y)} y values")


@dataclass(frozen=True)
class Marker:
    """A vertical or horizontal reference line with a label (a budget, a forecast date)."""

    label: str
    x: object = None
    y: float | None = None


def line_chart_svg(
    series: Iterable[Series], *, title: str, x_label: str, y_label: str,
    markers: Iterable[Marker] = (), y_min: float | None = None, y_max: float | None = None,
    width: float = 7.0, height: float = 3.2,
) -> str:
    """An inline `<svg>` element (no XML prolog) with text kept as text, so it is searchable and small."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    series, markers = list(series), list(markers)
    # Text stays text (searchable, small); fixed ids make the same data give the same SVG.
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "workbench", "font.size": 9}):
        figure = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasSVG(figure)
        axes = figure.add_subplot()
        drawn = 0
        for s in series:
            if not len(s.x):
                continue
            axes.plot(list(s.x), [float("nan") if v is None else v for v in s.y], label=s.name,
                      linestyle="--" if s.dashed else "-", marker="o" if s.markers else None, markersize=3)
            drawn += 1
        for m in markers:
            if m.x is not None:
                axes.axvline(m.x, color="0.4", linestyle=":", linewidth=1, label=m.label)
            if m.y is not None:
                axes.axhline(m.y, color="0.4", linestyle=":", linewidth=1, label=m.label)
            drawn += 1
        if not drawn:
            axes.text(0.5, 0.5, "No data yet", ha="center", va="center", transform=axes.transAxes)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        if y_min is not None or y_max is not None:
            axes.set_ylim(bottom=y_min, top=y_max)
        axes.grid(True, alpha=0.3)
        if drawn and any(s.name for s in series):
            axes.legend(fontsize=8, loc="best")
        if any(isinstance(x, (datetime, date)) for s in series for x in s.x[:1]):
            figure.autofmt_xdate()
        out = io.StringIO()
        figure.savefig(out, format="svg")
    svg = out.getvalue()
    start = svg.index("<svg")
    return svg[start:].replace("<svg ", f'<svg role="img" aria-label="{_attr(title)}" ', 1)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """The rows as CSV text (RFC 4180 quoting), header first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v.isoformat() if isinstance(v, (datetime, date)) else v for v in row])
    return out.getvalue()
