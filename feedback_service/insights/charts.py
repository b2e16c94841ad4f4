"""Dashboard trend charts: scores over time as an SVG document, and a plain-text alternative.

Plain functions, no Flask or database. The SVG is served on its own (<img src=...svg>) next to a
data table, so it carries a <title> and <desc> but is otherwise decorative.
"""
from __future__ import annotations

import io
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from xml.sax.saxutils import escape

import matplotlib
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

NO_DATA = "No reportable data for this period"
# Okabe-Ito colours, each with its own dash and marker so the series differ without colour too.
STYLES = (("#0072B2", "-", "o"), ("#D55E00", "-.", "s"), ("#009E73", ":", "^"), ("#CC79A7", (0, (6, 2)), "D"))
MARKER_COLOUR = "#555555"
RC = {
    "svg.fonttype": "none",  # text stays text: smaller, selectable, read out by screen readers
    "svg.hashsalt": "feedback-service-charts",  # fixed clip-path and marker ids: same data, same bytes
    "text.parse_math": False,  # labels are data: "$5 to $10" is not mathtext
    "font.size": 13, "xtick.labelsize": 13, "ytick.labelsize": 13, "legend.fontsize": 13,
    "axes.labelsize": 14, "axes.titlesize": 16,
}
# rc_context swaps the process-wide rcParams while it is open, so two charts drawn at once in threads
# could restore each other's settings; matplotlib leaves that locking to its callers.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Point:
    start: date  # period start (week Monday or month 1st)
    value: float | None  # 0-100 score; None = suppressed or no data, drawn as a gap, never as 0
    low: float | None = None  # 95% confidence interval
    high: float | None = None


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Marker:
    at: date
    label: str  # e.g. "discharge v2"


def trend_svg(title: str, series: Sequence[Series], markers: Sequence[Marker] = (), *,
              description: str = "") -> str:
    """An SVG document (str): each series on a fixed 0-100 scale over time, with version-change markers."""
    with _LOCK, matplotlib.rc_context(RC):
        # A bare Figure, not pyplot: no global figure list to leak into, freed once it goes out of scope.
        fig = Figure(figsize=(10, 5.625), layout="constrained")
        ax = fig.add_subplot()
        ax.set_title(title, loc="left")
        ax.set_ylim(0, 100)
        ax.set_ylabel("score (0-100)")
        ax.grid(axis="y", alpha=0.3)
        if any(p.value is not None for s in series for p in s.points):
            _draw(ax, series, markers)
        else:
            ax.set_xticks([])
            ax.text(0.5, 0.5, NO_DATA, transform=ax.transAxes, ha="center", va="center", gid="no-data")
        out = io.StringIO()
        # No Date keeps output deterministic; no Type drops the one URL (an rdf:resource) in the metadata.
        fig.savefig(out, format="svg", metadata={"Date": None, "Type": None})
    return _label(out.getvalue(), title, description or describe_trend(series, markers))


def _draw(ax, series: Sequence[Series], markers: Sequence[Marker]) -> None:
    for i, s in enumerate(series):
        colour, dashes, marker = STYLES[i % len(STYLES)]
        points = sorted(s.points, key=lambda p: p.start)
        xs = [p.start for p in points]
        # NaN, never 0: matplotlib breaks both the line and the band at a suppressed period.
        ax.plot(xs, [_nan(p.value) for p in points], color=colour, linestyle=dashes, linewidth=2.5,
                marker=marker, markersize=7, label=s.label, gid=f"series-{i}-line")
        banded = [p.value is not None and p.low is not None and p.high is not None for p in points]
        if any(banded):
            ax.fill_between(xs, [p.low if b else math.nan for p, b in zip(points, banded)],
                            [p.high if b else math.nan for p, b in zip(points, banded)],
                            color=colour, alpha=0.2, linewidth=0, gid=f"series-{i}-band")
    for i, m in enumerate(markers):
        ax.axvline(m.at, color=MARKER_COLOUR, linestyle="--", linewidth=1.5, gid=f"marker-{i}-line")
        # Upright beside its line, so labels of close-together changes do not run into each other.
        ax.text(m.at, 0.97, m.label, transform=ax.get_xaxis_transform(), rotation=90, ha="right", va="top",
                fontsize=12, color=MARKER_COLOUR, gid=f"marker-{i}-label",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    starts = [p.start for s in series for p in s.points]
    if len(set(starts)) > 1:
        ax.set_xlim(min(starts), max(starts))  # the whole period, suppressed ends included
    locator = AutoDateLocator(maxticks=8)  # few enough to stay apart at 13 pt
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.legend(loc="best").set_gid("legend")


def _label(svg: str, title: str, description: str) -> str:
    """Give the root <svg> role, aria-labelledby, and <title>/<desc> as its first children."""
    # The DOCTYPE names an external DTD; nothing needs it, and the document promises no outside references.
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg, count=1)
    end = svg.index(">", svg.index("<svg "))
    return (f'{svg[:end]} role="img" aria-labelledby="chart-title chart-desc">\n'
            f' <title id="chart-title">{escape(title)}</title>\n'
            f' <desc id="chart-desc">{escape(description)}</desc>{svg[end + 1:]}')


def describe_trend(series: Sequence[Series], markers: Sequence[Marker] = ()) -> str:
    """A one-paragraph plain-text alternative: per series the first, last, lowest and highest shown
    values with their periods, how many periods are suppressed, and the version-change dates."""
    parts = [_describe_series(s) for s in series]
    if markers:
        changes = "; ".join(f"{m.label} on {_day(m.at)}" for m in sorted(markers, key=lambda m: m.at))
        parts.append(f"Version changes: {changes}.")
    return " ".join(parts) or f"{NO_DATA}."


def _describe_series(s: Series) -> str:
    points = sorted(s.points, key=lambda p: p.start)
    shown = [p for p in points if p.value is not None]
    suppressed = f"{len(points) - len(shown)} of {len(points)} periods suppressed"
    if not shown:
        return f"{s.label}: no reportable data ({suppressed})."
    low, high = min(shown, key=lambda p: p.value), max(shown, key=lambda p: p.value)
    return (f"{s.label}: first {_at(shown[0])}, last {_at(shown[-1])}, lowest {_at(low)}, "
            f"highest {_at(high)}; {suppressed}.")


def _at(p: Point) -> str:
    return f"{p.value:.0f} ({_day(p.start)})"


def _day(d: date) -> str:
    return f"{d.day} {d:%B %Y}"


def _nan(v: float | None) -> float:
    return math.nan if v is None else v
