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

Series = list[tuple[str, list[float], list[float]]]  # (legend, timestamps, values)


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
                    series.append((_legend(query.legend, item["metric"]), list(times), list(values)))
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
    figure, axes = plt.subplots(rows, columns, figsize=(16, 3.6 * rows), squeeze=False)
    for axis, panel in zip(axes.flat, panels, strict=False):
        axis.set_title(panel.title, fontsize=11)
        for legend, times, values in panel.series[:12]:
            axis.plot([_as_date(t) for t in times], values, label=legend, linewidth=1.2)
        for when, _label in events:
            axis.axvline(_as_date(when), color="grey", linestyle=":", linewidth=0.8)
        if panel.series:
            axis.legend(fontsize=7, loc="upper left")
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
        axis.set_xlim(_as_date(span[0]), _as_date(span[1]))
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


def render(prometheus_url: str, out_dir: Path, minutes: float = 30) -> dict[str, Any]:
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
