"""The drift exporter: live windows of the gateway's sampled bins, judged against each profile.

Every ``interval_s`` it reads the cumulative bin counters (``flywheel_gateway_profile_bin_total``)
from the gateway, keeps a sliding window per (model, version), runs :func:`monitoring.drift.assess`
against the version's ``profile.json`` and publishes gauges that Prometheus scrapes and the
``FeatureDrift`` / ``PredictionDrift`` rules alert on:

- ``flywheel_feature_psi{model,version,feature}`` and ``flywheel_feature_ks{...}``
- ``flywheel_prediction_psi{model,version}`` and ``flywheel_prediction_p_value{...}`` (chi-squared
  for a classifier's predicted classes, KS for a regression's values)
- ``flywheel_drift_share{model,version}`` and ``flywheel_drift_detected{model,version}``
- ``flywheel_drift_window_samples{model,version}``
- ``flywheel_estimated_quality{model,version,metric="accuracy"}``: a classifier's accuracy
  estimated from the window's confidence counts alone (CBPE, ``monitoring/estimate.py``)

Gauges are only set while a window holds ``min_samples`` rows, so a quiet model never alerts on
noise, and they are withdrawn when traffic stops, so an alert resolves instead of freezing. The
first reading of a (model, version) is the window's start: history from before the exporter
started is not judged. The raw counters stay in the gateway (mergeable across
replicas); this process only reads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import orjson
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from model_store import ModelStore
from model_store.errors import ModelStoreError
from monitoring.drift import DriftReport, SlidingWindow, Thresholds, assess
from monitoring.estimate import estimated_accuracy
from monitoring.quality import QualityExporter, run_forever

if TYPE_CHECKING:
    from flywheel.settings import FlywheelSettings

log = logging.getLogger(__name__)
BinCounts = dict[tuple[str, str], dict[str, dict[int, float]]]  # (model, version) -> feature -> bin -> count


def gateway_bins(metrics_url: str) -> Callable[[], BinCounts]:
    """A reader of one gateway's cumulative profile-bin counters."""

    def read() -> BinCounts:
        counts: BinCounts = {}
        text = httpx.get(metrics_url, timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name != "flywheel_gateway_profile_bin_total":
                    continue
                labels = sample.labels
                key = (labels["model"], labels["version"])
                counts.setdefault(key, {}).setdefault(labels["feature"], {})[int(labels["bin"])] = (
                    sample.value
                )
        return counts

    return read


def _add(into: BinCounts, counts: BinCounts) -> None:
    for key, features in counts.items():
        for feature, bins in features.items():
            target = into.setdefault(key, {}).setdefault(feature, {})
            for index, value in bins.items():
                target[index] = target.get(index, 0.0) + value


def _went_down(now: BinCounts, before: BinCounts) -> bool:
    return any(
        now.get(key, {}).get(feature, {}).get(index, 0.0) < value
        for key, features in before.items()
        for feature, bins in features.items()
        for index, value in bins.items()
    )


def merged_gateway_bins(metrics_urls: list[str]) -> Callable[[], BinCounts]:
    """The sum of every gateway replica's counters: one verdict, whichever replica served.

    The same rules as Prometheus's ``sum(increase(...))``: a replica whose counters went down
    restarted, so what it had counted before stays in (an offset); a replica that does not answer
    keeps its last reading instead of dropping the sum. With one gateway: its counters as they are.
    """
    if len(metrics_urls) == 1:
        return gateway_bins(metrics_urls[0])
    readers = {url: gateway_bins(url) for url in metrics_urls}
    last: dict[str, BinCounts] = {}
    offsets: dict[str, BinCounts] = {}

    def read() -> BinCounts:
        total: BinCounts = {}
        for url, reader in readers.items():
            try:
                now = reader()
            except httpx.HTTPError as error:
                log.warning("gateway replica at %s unreadable, counting its last reading: %s", url, error)
                now = last.get(url, {})
            else:
                if _went_down(now, last.get(url, {})):
                    _add(offsets.setdefault(url, {}), last[url])
                last[url] = now
            _add(total, now)
            _add(total, offsets.get(url, {}))
        return total

    return read


def aligned_counts(profile: dict[str, Any], features: dict[str, dict[int, float]]) -> dict[str, np.ndarray]:
    """Bin counts as arrays the length of each feature's (or the prediction's) reference."""
    counts = {}
    for feature, bins in features.items():
        reference = (profile.get("features", {}).get(feature) or profile.get(feature) or {}).get(
            "frequencies"
        )
        if reference is not None:
            counts[feature] = np.asarray([bins.get(index, 0.0) for index in range(len(reference))])
    return counts


class DriftExporter:
    def __init__(
        self,
        store: ModelStore,
        read_bins: Callable[[], BinCounts],
        registry: CollectorRegistry,
        window_s: float = 300.0,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.store = store
        self.read_bins = read_bins
        self.window_s = window_s
        self.thresholds = thresholds or Thresholds()
        self._windows: dict[tuple[str, str], SlidingWindow] = {}
        self._profiles: dict[tuple[str, str], dict[str, Any]] = {}
        self._profile_retry_at: dict[tuple[str, str], float] = {}
        self._published: dict[tuple[str, str], set[str]] = {}
        labels = ["model", "version"]
        self.feature_psi = Gauge(
            "flywheel_feature_psi", "PSI of a feature's live window.", [*labels, "feature"], registry=registry
        )
        self.feature_ks = Gauge(
            "flywheel_feature_ks",
            "KS statistic of a feature's live window.",
            [*labels, "feature"],
            registry=registry,
        )
        self.prediction_psi = Gauge(
            "flywheel_prediction_psi", "PSI of the live prediction window.", labels, registry=registry
        )
        self.prediction_p_value = Gauge(
            "flywheel_prediction_p_value",
            "p-value of the live prediction window against the reference (chi-squared or KS).",
            labels,
            registry=registry,
        )
        self.drift_share = Gauge(
            "flywheel_drift_share", "Share of features alerting.", labels, registry=registry
        )
        self.drift_detected = Gauge(
            "flywheel_drift_detected", "1 when the dataset-level verdict is drift.", labels, registry=registry
        )
        self.window_samples = Gauge(
            "flywheel_drift_window_samples", "Rows in the live window.", labels, registry=registry
        )
        self.estimated_quality = Gauge(
            "flywheel_estimated_quality",
            "A classifier's accuracy estimated from its live confidences alone (CBPE), before labels.",
            [*labels, "metric"],
            registry=registry,
        )

    def _profile(self, model: str, version: str) -> dict[str, Any] | None:
        """The version's reference profile; a failed read is retried a minute later, not cached."""
        key = (model, version)
        if key in self._profiles:
            return self._profiles[key]
        if time.monotonic() < self._profile_retry_at.get(key, 0.0):
            return None
        try:
            profile: dict[str, Any] = orjson.loads(
                self.store.read_artifact(model, int(version), "profile.json")
            )
        except Exception as error:
            log.warning("no profile for %s v%s yet: %s", model, version, error)
            self._profile_retry_at[key] = time.monotonic() + 60.0
            return None
        self._profiles[key] = profile
        return profile

    def collect_once(self, now: float | None = None) -> dict[tuple[str, str], DriftReport]:
        """Read, window, judge and publish; returns the reports (for the CLI and tests)."""
        now = time.monotonic() if now is None else now
        reports = {}
        bins = self.read_bins()
        for gone in set(self._published) - set(bins):
            # The gateway no longer reports it (restarted, version retired): no verdict, no window.
            self._withdraw(*gone)
            self._windows.pop(gone, None)
            with contextlib.suppress(KeyError):
                self.window_samples.remove(*gone)
        for (model, version), features in bins.items():
            profile = self._profile(model, version)
            if profile is None:
                continue
            cumulative = aligned_counts(profile, features)
            window = self._windows.get((model, version))
            if window is None or window.went_backwards(cumulative):
                # First reading, or the counters restarted (a gateway restart): start a new window
                # rather than subtract across the reset into negative counts.
                window = self._windows[(model, version)] = SlidingWindow(seconds=self.window_s)
            window.add(now, cumulative)
            counts = window.counts()
            report = assess(profile, counts, self.thresholds)
            reports[(model, version)] = report
            self._publish(model, version, report)
            self._publish_estimate(model, version, profile, counts, report)
        return reports

    def _publish(self, model: str, version: str, report: DriftReport) -> None:
        samples = max((f.samples for f in report.features), default=0.0)
        self.window_samples.labels(model, version).set(samples)
        if samples < self.thresholds.min_samples:
            # Too little traffic to judge (a version retired, a quiet hour): no verdict at all,
            # rather than the last one frozen in place, so alerts resolve instead of firing forever.
            self._withdraw(model, version)
            return
        features = {feature.feature for feature in report.features}
        for feature in report.features:
            self.feature_psi.labels(model, version, feature.feature).set(feature.psi)
            if feature.ks is not None:
                self.feature_ks.labels(model, version, feature.feature).set(feature.ks)
        self._published[(model, version)] = features
        if report.prediction is not None:
            self.prediction_psi.labels(model, version).set(report.prediction.psi)
            self.prediction_p_value.labels(model, version).set(report.prediction.p_value)
        self.drift_share.labels(model, version).set(report.drifted_share)
        self.drift_detected.labels(model, version).set(1.0 if report.detected else 0.0)

    def _publish_estimate(
        self,
        model: str,
        version: str,
        profile: dict[str, Any],
        counts: dict[str, np.ndarray],
        report: DriftReport,
    ) -> None:
        samples = max((f.samples for f in report.features), default=0.0)
        estimate = estimated_accuracy(profile, counts["confidence"]) if "confidence" in counts else None
        if estimate is None or samples < self.thresholds.min_samples:
            with contextlib.suppress(KeyError):
                self.estimated_quality.remove(model, version, "accuracy")
            return
        self.estimated_quality.labels(model, version, "accuracy").set(estimate)

    def _withdraw(self, model: str, version: str) -> None:
        for feature in self._published.pop((model, version), set()):
            for gauge in (self.feature_psi, self.feature_ks):
                with contextlib.suppress(KeyError):
                    gauge.remove(model, version, feature)
        for gauge in (self.prediction_psi, self.prediction_p_value, self.drift_share, self.drift_detected):
            with contextlib.suppress(KeyError):
                gauge.remove(model, version)
        with contextlib.suppress(KeyError):
            self.estimated_quality.remove(model, version, "accuracy")


def gateway_metrics_urls(settings: FlywheelSettings) -> list[str]:
    """Each gateway replica's own /metrics (the balancer would answer from one of them)."""
    from serving.gateway.service import gateway_replica_ports

    return [f"http://{settings.host}:{http}/metrics" for http, _ in gateway_replica_ports(settings)]


def main() -> int:
    """``python -m monitoring.exporter``: serve the gauges on ``drift_exporter_port`` and keep them fresh."""
    from prometheus_client import start_http_server

    from flywheel.settings import FlywheelSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = FlywheelSettings()
    registry = CollectorRegistry()
    exporter = DriftExporter(
        ModelStore.open(settings.resolve_store_uri(), settings),
        merged_gateway_bins(gateway_metrics_urls(settings)),
        registry,
        window_s=settings.drift_window_s,
    )
    quality = QualityExporter(
        exporter.store,
        registry,
        settings.quality_window_labels,
        settings.quality_min_labels,
        settings.label_join_window_days,
    )
    stop_quality = threading.Event()
    quality_thread = threading.Thread(
        target=run_forever, args=(quality, settings.quality_interval_s, stop_quality), daemon=True
    )
    quality_thread.start()
    server, thread = start_http_server(settings.drift_exporter_port, settings.host, registry)
    log.info(
        "drift exporter on %s:%s, window %ss", settings.host, settings.drift_exporter_port, exporter.window_s
    )
    try:
        while True:
            try:
                exporter.collect_once()
            except (httpx.HTTPError, ModelStoreError, BotoCoreError, ClientError) as error:
                # The gateway restarting or a store outage is not fatal: try again next tick.
                log.warning("drift collection skipped: %s", error)
            time.sleep(settings.drift_interval_s)  # a pacing loop, not a wait for a server
    except KeyboardInterrupt:
        return 0
    finally:
        stop_quality.set()
        server.shutdown()
        thread.join(timeout=5)
        quality_thread.join(timeout=5)


if __name__ == "__main__":
    raise SystemExit(main())
