"""The journey-map feed: the map of a period as JSON, or as CSV rows a journey-mapping tool
imports (one row per stage or touchpoint, period and metric, with value, n and date), optionally
cut into weeks or months. Written as it is computed, so long exports stream."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

from ..journeys.models import Journey
from ..rollups.filters import Filters
from ..rollups.queries import INTERVALS, journey_map, period_end, period_start
from .comments import stage_themes

CSV_COLUMNS = ("journey", "stage", "touchpoint", "level", "metric", "value", "n", "date", "period_start",
               "period_end", "ci_low", "ci_high", "previous_value", "change", "suppressed")


def csv_name(journey: Journey, f: Filters) -> str:
    return f"{journey.slug}-map-{f.start.isoformat()}-{f.end.isoformat()}.csv"


def periods(f: Filters, interval: str | None) -> list[Filters]:
    """The period itself, or its weeks (Monday to Sunday) or months, clipped to it."""
    if interval is None:
        return [f]
    assert interval in INTERVALS
    out, start = [], f.start
    while start <= f.end:
        end = min(period_end(period_start(start, interval), interval), f.end)
        out.append(replace(f, start=start, end=end))
        start = end + timedelta(days=1)
    return out


def themes_of(journey: Journey, f: Filters, min_n: int) -> dict[str, list[dict]]:
    """Per stage slug, its top friction themes as the feed gives them: term and count. Example
    comments stay on the dashboard, behind sign-in; no share either (with the count, it would
    give the number of comments). Under a touchpoint, channel, language or source filter the
    count is left out: less the same theme's count without the filter, it would count the
    patients left out."""
    return {slug: [{"term": t.term, "count": None if f.narrowed else t.count} for t in found]
            for slug, found in stage_themes(journey, f, min_n).items()}


def map_with_themes(journey: Journey, f: Filters, min_n: int) -> dict:
    """The map of the period with each stage's top friction themes."""
    doc = journey_map(journey, f, min_n)
    found = themes_of(journey, f, min_n)
    for stage in doc["stages"]:
        stage["themes"] = found.get(stage["slug"], [])
    return doc


def _metrics(cell: dict) -> Iterator[tuple]:
    """(metric, measure summary or None, value, n) for one cell; a suppressed metric has value None."""
    for m in ("satisfaction", "friction", "nps"):
        s = cell.get(m, {"suppressed": True})
        shown = not s.get("suppressed", True)
        yield m, s, s.get("score") if shown else None, s.get("responses") if shown else None
        if m != "nps":
            pct = s.get("top_box_pct") if shown else None
            yield f"{m}_top_box_pct", None, pct, s.get("n") if pct is not None else None
    shown = not cell.get("suppressed", True)
    yield "responses", None, cell.get("responses") if shown else None, cell.get("responses") if shown else None
    rate = cell.get("response_rate") if shown else None
    yield "response_rate", None, rate, cell.get("sent") if rate is not None else None


def csv_rows(doc: dict) -> Iterator[dict]:
    """The CSV rows of one period's map (see CSV_COLUMNS)."""
    base = {"journey": doc["journey"], "date": doc["to"], "period_start": doc["from"], "period_end": doc["to"]}
    for stage in doc.get("stages", []):
        cells = [("stage", stage, "")] + [("touchpoint", tp, tp["slug"]) for tp in stage["touchpoints"]]
        for level, cell, tp_slug in cells:
            trend = cell.get("trend", {})
            for metric, summary, value, n in _metrics(cell):
                change = trend.get(metric, {}) if summary is not None else {}
                ci = summary.get("ci95") if summary and value is not None else None
                yield {**base, "stage": stage["slug"], "touchpoint": tp_slug, "level": level, "metric": metric,
                       "value": "" if value is None else value, "n": "" if n is None else n,
                       "ci_low": ci[0] if ci else "", "ci_high": ci[1] if ci else "",
                       "previous_value": _blank(change.get("previous")), "change": _blank(change.get("change")),
                       "suppressed": "true" if value is None else "false"}
    themes = {stage["slug"]: stage.get("themes", []) for stage in doc.get("stages", [])} | doc.get("themes", {})
    for slug, found in themes.items():
        for theme in found:
            count = _blank(theme["count"])
            yield {**base, "stage": slug, "touchpoint": "", "level": "stage", "metric": f"theme: {theme['term']}",
                   "value": count, "n": count, "ci_low": "", "ci_high": "", "previous_value": "", "change": "",
                   "suppressed": "true" if count == "" else "false"}


def _blank(value):
    return "" if value is None else value


def feed(journey: Journey, f: Filters, min_n: int, interval: str | None = None) -> Iterator[dict]:
    """The period's map, with themes. Given an interval: a heading with the period's themes, then
    each week's or month's map, and not the whole period's map too: a hidden week could be worked
    out as the whole minus the weeks shown."""
    if not interval:
        yield map_with_themes(journey, f, min_n)
        return
    yield {"journey": journey.slug, "name": journey.name, "from": f.start.isoformat(), "to": f.end.isoformat(),
           "interval": interval, "filters": f.selection(),
           "min_reporting_n": min_n, "themes": themes_of(journey, f, min_n)}
    for part in periods(f, interval):
        yield journey_map(journey, part, min_n)


def json_chunks(docs: Iterator[dict], interval: str | None) -> Iterator[str]:
    """The feed as one JSON document, written a period at a time: the period's map or, given an
    interval, the heading with "periods": [each week's or month's map]."""
    first = next(docs)
    if not interval:
        yield json.dumps(first, ensure_ascii=False)
        return
    yield json.dumps(first, ensure_ascii=False)[:-1] + ', "periods": ['
    for i, doc in enumerate(docs):
        yield ("," if i else "") + json.dumps(doc, ensure_ascii=False)
    yield "]}"


def csv_lines(docs: Iterator[dict]) -> Iterator[str]:
    """The feed as CSV text, a header then a line at a time."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for doc in docs:
        for row in csv_rows(doc):
            writer.writerow(row)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
