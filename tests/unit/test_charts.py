"""Trend charts as SVG, and their text alternative (feedback_service/insights/charts.py)."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import matplotlib
import pytest

from feedback_service.insights.charts import NO_DATA, Marker, Point, Series, describe_trend, trend_svg

SVG = "{http://www.w3.org/2000/svg}"
HREF = "{http://www.w3.org/1999/xlink}href"
MONDAY = date(2025, 1, 6)


def weekly(label: str, values: list[float | None]) -> Series:
    """Weekly points from MONDAY. Every point has an interval, suppressed ones too, so a test can
    see that the chart leaves it out rather than the data."""
    return Series(label, tuple(Point(MONDAY + timedelta(weeks=i), v, 50.0, 70.0) for i, v in enumerate(values)))


def week(i: int) -> date:
    return MONDAY + timedelta(weeks=i)


def group(root: ET.Element, gid: str) -> ET.Element:
    found = root.find(f".//{SVG}g[@id='{gid}']")
    assert found is not None, f"no <g id={gid!r}> in the chart"
    return found


def text_of(element: ET.Element) -> str:
    return "".join(element.itertext()).strip()


def texts(root: ET.Element) -> list[str]:
    return [text_of(t) for t in root.iter(f"{SVG}text")]


def test_root_is_svg_with_escaped_title_and_desc_first():
    svg = trend_svg("Wait <&> times", [weekly("Satisfaction", [60, 62])], description='a < b & "c"')
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    title, desc = root[0], root[1]
    assert (title.tag, title.text) == (f"{SVG}title", "Wait <&> times")
    assert (desc.tag, desc.text) == (f"{SVG}desc", 'a < b & "c"')
    assert root.get("role") == "img"
    assert root.get("aria-labelledby").split() == [title.get("id"), desc.get("id")]
    assert "Wait &lt;&amp;&gt; times" in svg


def test_desc_defaults_to_the_text_alternative():
    series, markers = [weekly("Satisfaction", [60, None, 62])], [Marker(week(1), "discharge v2")]
    desc = ET.fromstring(trend_svg("Discharge", series, markers))[1]
    assert desc.text == describe_trend(series, markers)


def test_hostile_labels_stay_text_with_no_script_or_outside_reference():
    evil = "<script>alert(1)</script> $5 to $10"
    svg = trend_svg(evil, [weekly(evil, [60, 62])], [Marker(week(1), evil)])
    root = ET.fromstring(svg)
    assert not [e for e in root.iter() if e.tag.rsplit("}", 1)[-1].lower() == "script"]
    # Drawn as <text>, verbatim (not mathtext): the title, the legend entry and the marker label.
    assert texts(root).count(evil) == 3
    assert all(e.get(HREF, "#").startswith("#") and e.get("href", "#").startswith("#") for e in root.iter())
    assert re.findall(r"url\((?!#)", svg) == []
    assert "<!DOCTYPE" not in svg


def test_same_input_gives_the_same_bytes():
    series, markers = [weekly("Satisfaction", [60, None, 62, 64])], [Marker(week(2), "discharge v2")]
    assert trend_svg("Discharge", series, markers) == trend_svg("Discharge", series, markers)


def test_suppressed_period_is_a_gap_in_line_and_band():
    root = ET.fromstring(trend_svg("Discharge", [weekly("Satisfaction", [60, 62, None, 65, 66])]))
    line = group(root, "series-0-line")
    assert line.find(f"{SVG}path").get("d").count("M") == 2  # two runs, not one line through a zero
    assert len(line.findall(f".//{SVG}use")) == 4  # a marker per shown point only
    assert len(group(root, "series-0-band").findall(f"{SVG}path")) == 2


def test_y_axis_is_0_to_100_whatever_the_data():
    root = ET.fromstring(trend_svg("Discharge", [weekly("Satisfaction", [61, 63, 62])]))
    shown = texts(root)
    assert {"0", "100", "score (0-100)"} <= set(shown)


def test_series_differ_without_colour():
    root = ET.fromstring(trend_svg("Discharge", [weekly("Satisfaction", [60, 62]), weekly("Friction", [30, 28])]))
    first, second = group(root, "series-0-line"), group(root, "series-1-line")
    assert first.find(f"{SVG}path").get("style") != second.find(f"{SVG}path").get("style")
    shapes = [g.find(f".//{SVG}defs/{SVG}path").get("d") for g in (first, second)]
    assert shapes[0] != shapes[1]
    assert {"Satisfaction", "Friction"} <= set(texts(group(root, "legend")))


def test_markers_are_dashed_lines_at_their_dates_with_their_labels():
    markers = [Marker(week(1), "discharge v2"), Marker(week(3), "reminder v3")]
    root = ET.fromstring(trend_svg("Discharge", [weekly("Satisfaction", [60, 62, 64, 66])], markers))
    point_xs = [float(u.get("x")) for u in group(root, "series-0-line").iter(f"{SVG}use")]
    for i, marker in enumerate(markers):
        path = group(root, f"marker-{i}-line").find(f"{SVG}path")
        assert "stroke-dasharray" in path.get("style")
        assert float(path.get("d").split()[1]) == pytest.approx(point_xs[2 * i + 1], abs=0.01)
        assert text_of(group(root, f"marker-{i}-label")) == marker.label


@pytest.mark.parametrize("series", [[], [weekly("Satisfaction", [None, None])], [Series("Friction", ())]])
def test_nothing_to_show_still_gives_a_chart(series):
    root = ET.fromstring(trend_svg("Discharge", series, [Marker(week(1), "discharge v2")]))
    assert root.tag == f"{SVG}svg"
    assert text_of(group(root, "no-data")) == NO_DATA
    assert root.find(f".//{SVG}g[@id='series-0-line']") is None


def test_rendering_neither_reads_nor_changes_global_settings():
    series = [weekly("Satisfaction", [60, 62])]
    plain = trend_svg("Discharge", series)
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "other", "font.size": 6}):
        assert trend_svg("Discharge", series) == plain
        assert (matplotlib.rcParams["svg.fonttype"], matplotlib.rcParams["svg.hashsalt"]) == ("path", "other")
        assert matplotlib.rcParams["font.size"] == 6


def test_describe_trend_gives_first_last_extremes_suppressed_and_changes():
    series = [weekly("Satisfaction", [70, None, 55, 80, None]), weekly("Friction", [None, None])]
    text = describe_trend(series, [Marker(week(2), "reminder v3"), Marker(week(1), "discharge v2")])
    assert ("Satisfaction: first 70 (6 January 2025), last 80 (27 January 2025), lowest 55 (20 January 2025), "
            "highest 80 (27 January 2025); 2 of 5 periods suppressed.") in text
    assert "Friction: no reportable data (2 of 2 periods suppressed)." in text
    assert text.endswith("Version changes: discharge v2 on 13 January 2025; reminder v3 on 20 January 2025.")


def test_describe_trend_of_nothing():
    assert describe_trend([], []) == f"{NO_DATA}."
