"""TF Serving's Prometheus endpoint, as ``--monitoring_config_file`` turns it on in the real server.

The real server reads a ``MonitoringConfig`` text proto::

    prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }

and serves its metrics on the REST port at that path. The proto is not part of the
``tensorflow-serving-api`` wheel, so the two fields are read directly. The metric names are the
real server's: ``:tensorflow:serving:request_count{model_name,status}`` and
``:tensorflow:serving:request_latency{model_name,API,entrypoint}`` (microseconds), so a
Prometheus scrape config and dashboards written here work against the real image.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric

DEFAULT_PATH = "/monitoring/prometheus/metrics"
#: TF Serving's latency buckets are in microseconds.
LATENCY_BUCKETS_US = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1e6, 1e7)


@dataclass(frozen=True)
class MonitoringConfig:
    enabled: bool = False
    path: str = DEFAULT_PATH

    @classmethod
    def read(cls, file: Path) -> MonitoringConfig:
        text = file.read_text()
        block = re.search(r"prometheus_config\s*\{(?P<body>[^}]*)\}", text)
        if block is None:
            return cls()
        body = block["body"]
        enabled = re.search(r"\benable\s*:\s*true\b", body) is not None
        path = re.search(r'\bpath\s*:\s*"(?P<path>[^"]+)"', body)
        return cls(enabled, path["path"] if path else DEFAULT_PATH)


class _RequestCount:
    """``:tensorflow:serving:request_count`` under exactly that name (prometheus-client's Counter
    would publish ``..._total``, which queries written for the real server do not match)."""

    NAME = ":tensorflow:serving:request_count"

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def inc(self, model: str, status: str) -> None:
        with self._lock:
            self.counts[(model, status)] = self.counts.get((model, status), 0.0) + 1.0

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.NAME, "The total number of requests.", "unknown")
        with self._lock:
            for (model, status), value in sorted(self.counts.items()):
                metric.add_sample(self.NAME, {"model_name": model, "status": status}, value)
        yield metric


class RuntimeMetrics:
    #: Requests for models the server does not have are counted under this name, not the
    #: caller's: arbitrary names in URLs must not create unbounded series.
    UNKNOWN_MODEL = "__unknown__"

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = _RequestCount()
        self.registry.register(self.requests)
        self.latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"],
            buckets=LATENCY_BUCKETS_US,
            registry=self.registry,
        )

    def record(
        self, model: str, status: str, api: str, entrypoint: str, seconds: float, known: bool = True
    ) -> None:
        name = model if known else self.UNKNOWN_MODEL
        self.requests.inc(name, status)
        self.latency.labels(name, api, entrypoint).observe(seconds * 1e6)


MONITORING_CONFIG = 'prometheus_config {\n  enable: true\n  path: "/monitoring/prometheus/metrics"\n}\n'
