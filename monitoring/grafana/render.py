"""Render the dashboard's core panels to PNG and HTML with matplotlib, for people without Grafana.

Same panel list and PromQL as the Grafana JSON; each panel is a range query over the last
``minutes`` against the stack's Prometheus. Annotations (routing changes, retraining runs) are
drawn as vertical lines on every panel, as Grafana would.
"""

from __future__ import annotations

import base64
import html
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from monitoring.grafana.panels import FLYWHEEL, Dashboard

Series = list[tuple[str, list[float], list[float], dict[str, str]]]  # (legend, times, values, labels)


def _legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda match: labels.get(match.group(1), ""), template) or "value"


def query_range(
    prometheus_url: str, expr: str, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{prometheus_url}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": step},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    if body.get("status") != "success":
        raise ValueError(f"{expr}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@dataclass
class RenderedPanel:
    title: str
    series: Series


def fetch(
    prometheus_url: str,
    dashboard: Dashboard = FLYWHEEL,
    minutes: float = 30,
    step: float | None = None,
    end: float | None = None,
) -> tuple[list[RenderedPanel], list[tuple[float, str]]]:
    end = end or time.time()
    start = end - minutes * 60
    step = step or max(1.0, minutes * 60 / 300)
    panels = []
    for panel in (p for p in dashboard.panels if p.core):
        series: Series = []
        for query in panel.queries:
            for item in query_range(prometheus_url, query.expr, start, end, step):
                points = [(float(t), float(v)) for t, v in item["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if points:
                    times, values = zip(*points, strict=True)
                    labels = dict(item["metric"])
                    series.append((_legend(query.legend, labels), list(times), list(values), labels))
        panels.append(RenderedPanel(panel.title, series))
    events = []
    for annotation in dashboard.annotations:
        for item in query_range(prometheus_url, annotation.expr, start, end, step):
            first = [float(t) for t, _ in item["values"]][:1]
            events += [(t, _legend(annotation.title, item["metric"])) for t in first]
    return panels, sorted(events)


def render_png(
    panels: list[RenderedPanel], events: list[tuple[float, str]], path: Path, span: tuple[float, float]
) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display here
    from matplotlib import dates as mdates
    from matplotlib import pyplot as plt

    columns = 2
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(20, 3.8 * rows), squeeze=False)
    start, end = data_span(panels, span)
    for axis, panel in zip(axes.flat, panels, strict=False):
        axis.set_title(panel.title, fontsize=11)
        styles = _line_styles(panel.series[:12])
        for (legend, times, values, _labels), (colour, dashes) in zip(panel.series[:12], styles, strict=True):
            axis.plot(
                [_as_date(t) for t in times],
                values,
                label=legend,
                linewidth=1.4,
                color=colour,
                linestyle=dashes,
            )
        for when, _label in events:
            axis.axvline(_as_date(when), color="grey", linestyle=":", linewidth=0.8)
        if panel.series:
            # Beside the plot, never over the lines it explains.
            axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
        axis.set_xlim(_as_date(start), _as_date(end))
        axis.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=8))
        axis.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def data_span(panels: list[RenderedPanel], span: tuple[float, float]) -> tuple[float, float]:
    """The time the data covers (2 % padding), inside the requested span; the span if there is none.

    A 15-minute axis over 3 minutes of data squeezes every line into a corner.
    """
    times = [t for panel in panels for _, series_times, _, _ in panel.series for t in series_times]
    if not times:
        return span
    first, last = max(min(times), span[0]), min(max(times), span[1])
    padding = max((last - first) * 0.02, 1.0)
    return first - padding, last + padding


def _line_styles(series: Series) -> list[tuple[str, str]]:
    """(colour, line style) per series: one colour per feature or variant, one style per version.

    Series that differ only in their version (v1 and v2 of one feature) share a colour, solid
    for the newest version and dashed, dotted, ... for older ones, so they read as a pair.
    """
    palette = [f"C{index}" for index in range(10)]
    dash_cycle = ["-", "--", ":", "-."]
    versions = sorted({labels.get("version", "") for *_, labels in series}, key=_version_key, reverse=True)
    colours: dict[str, str] = {}
    styles = []
    for legend, _, _, labels in series:
        version = labels.get("version", "")
        identity = legend.replace(f"v{version}", "").strip() if version else legend
        colour = colours.setdefault(identity, palette[len(colours) % len(palette)])
        styles.append((colour, dash_cycle[versions.index(version) % len(dash_cycle)]))
    return styles


def _version_key(version: str) -> int:
    return int(version) if version.isdigit() else -1


def _as_date(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def render_html(png: Path, events: list[tuple[float, str]], path: Path, title: str = FLYWHEEL.title) -> Path:
    encoded = base64.b64encode(png.read_bytes()).decode()
    rows = "".join(
        f"<tr><td>{time.strftime('%H:%M:%S', time.gmtime(when))}</td><td>{html.escape(label)}</td></tr>"
        for when, label in events
    )
    path.write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><img alt='panels' src='data:image/png;base64,{encoded}'>"
        f"<h2>Annotations (UTC)</h2><table><tr><th>time</th><th>event</th></tr>{rows}</table>"
    )
    return path


def wait_for_next_scrape(prometheus_url: str, after: float, timeout_s: float = 30.0) -> bool:
    """Until Prometheus holds a sample scraped after ``after`` (so the picture ends at "now").

    Polls with a deadline; False when none came (Prometheus idle or down): render what there is.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            rows = httpx.get(
                f"{prometheus_url}/api/v1/query", params={"query": "max(timestamp(up))"}, timeout=10
            ).json()["data"]["result"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        if rows and float(rows[0]["value"][1]) >= after:
            return True
        time.sleep(0.5)
    return False


def render(prometheus_url: str, out_dir: Path, minutes: float = 30) -> dict[str, Any]:
    wait_for_next_scrape(prometheus_url, time.time())
    end = time.time()
    panels, events = fetch(prometheus_url, minutes=minutes, end=end)
    png = render_png(panels, events, out_dir / "flywheel-panels.png", (end - minutes * 60, end))
    page = render_html(png, events, out_dir / "flywheel-panels.html")
    return {
        "png": str(png),
        "html": str(page),
        "panels": {panel.title: len(panel.series) for panel in panels},
        "annotations": len(events),
    }
