"""Live quality per version, from the durable label join, as Prometheus gauges.

Every ``interval_s`` (a task of the drift exporter's process) it runs :class:`LabelJoiner` for each
model the gateways captured, then publishes over each version's newest ``window`` joined labels:

- ``flywheel_live_quality{model,version,metric}``: ``rmse``, ``mae`` and ``directional_accuracy``
  for a regression, ``accuracy`` and ``calibration_error`` for a classifier, once a version has
  ``min_labels`` joined labels (withdrawn below, so an alert resolves instead of freezing);
- ``flywheel_holdout_quality{model,version,metric}``: the same metrics from the version's
  manifest (its holdout test set), the yardstick ``ModelQualityDegraded`` compares with;
- ``flywheel_quality_labels{model,version}``: joined labels in the window;
- ``flywheel_label_join_pending{model}`` and ``flywheel_label_join_seconds{model}``: labels that
  matched no captured request yet, and how long the last join took.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from model_store import ModelStore
from model_store.capture import CAPTURE_PREFIX
from model_store.manifest import OutputKind
from monitoring.join import JoinConflictError, JoinReport, LabelJoiner, quality
from serving.routing.spec_store import SpecStore

log = logging.getLogger(__name__)


class QualityExporter:
    def __init__(
        self,
        store: ModelStore,
        registry: CollectorRegistry,
        window: int = 500,
        min_labels: int = 50,
        join_window_days: int = 7,
    ) -> None:
        self.store = store
        self.specs = SpecStore(store.storage)
        self.joiner = LabelJoiner(store.storage, join_window_days)
        self.window = window
        self.min_labels = min_labels
        self._manifests: dict[tuple[str, int], Any] = {}
        self._published: set[tuple[str, str, str]] = set()
        self._counted: set[tuple[str, str]] = set()
        labels = ["model", "version", "metric"]
        self.live = Gauge(
            "flywheel_live_quality", "A version's metric over its newest joined labels.", labels,
            registry=registry,
        )  # fmt: skip
        self.holdout = Gauge(
            "flywheel_holdout_quality", "The same metric on the version's holdout test set (manifest).",
            labels, registry=registry,
        )  # fmt: skip
        self.labels = Gauge(
            "flywheel_quality_labels", "Joined labels in a version's quality window.", ["model", "version"],
            registry=registry,
        )  # fmt: skip
        self.pending = Gauge(
            "flywheel_label_join_pending", "Labels that matched no captured request yet.", ["model"],
            registry=registry,
        )  # fmt: skip
        self.join_seconds = Gauge(
            "flywheel_label_join_seconds", "Duration of the model's last label join.", ["model"],
            registry=registry,
        )  # fmt: skip

    def serving_versions(self, model: str) -> set[int] | None:
        """The versions the model's routing spec serves now (None: no spec, so no opinion)."""
        spec = self.specs.find(model)
        return None if spec is None else {variant.version for variant in spec.variants}

    def models(self) -> list[str]:
        return sorted(self.store.storage.list_children(CAPTURE_PREFIX))

    def _manifest(self, model: str, version: int) -> Any:
        key = (model, version)
        if key not in self._manifests:
            self._manifests[key] = self.store.get_manifest(model, version)
        return self._manifests[key]

    def collect_once(self) -> dict[str, dict[int, dict[str, float]]]:
        """Join, measure and publish every captured model; returns the live metrics (CLI, tests).
        One model failing (a manifest unreadable this round, say) does not stop the others."""
        result = {}
        seen: set[tuple[str, str, str]] = set()
        counted: set[tuple[str, str]] = set()
        for model in self.models():
            try:
                live = self._collect_model(model, seen, counted)
            except Exception as error:  # the model's gauges stay as they were until the next round
                log.warning("live quality of %s skipped this round: %s", model, error)
                seen |= {key for key in self._published if key[0] == model}
                counted |= {key for key in self._counted if key[0] == model}
                continue
            if live is not None:
                result[model] = live
        for stale in self._published - seen:
            for gauge in (self.live, self.holdout):
                with contextlib.suppress(KeyError):
                    gauge.remove(*stale)
        for stale_count in self._counted - counted:
            with contextlib.suppress(KeyError):
                self.labels.remove(*stale_count)
        self._published, self._counted = seen, counted
        return result

    def _collect_model(
        self, model: str, seen: set[tuple[str, str, str]], counted: set[tuple[str, str]]
    ) -> dict[int, dict[str, float]] | None:
        report: JoinReport | None = None
        try:
            report = self.joiner.run(model)
        except JoinConflictError as error:
            log.info("%s", error)  # another joiner's result stands; read it
        if report is not None:
            self.pending.labels(model).set(report.pending)
            self.join_seconds.labels(model).set(report.seconds)
        joined = self.joiner.read(model)
        if joined.empty:
            return None
        versions = sorted(int(v) for v in joined["version"].unique())
        kinds = {v: self._manifest(model, v).output.kind for v in versions}
        live: dict[int, dict[str, float]] = {}
        for kind in set(kinds.values()):
            rows = joined[joined["version"].isin([v for v in versions if kinds[v] is kind])]
            live |= quality(rows, kind is OutputKind.CLASSIFICATION, self.window)
        serving = self.serving_versions(model)
        for version, metrics in live.items():
            count = metrics.pop("labels")
            if serving is not None and version not in serving:
                continue  # retired: its alert resolves instead of firing about a version nobody gets
            self.labels.labels(model, str(version)).set(count)
            counted.add((model, str(version)))
            if count < self.min_labels:
                continue
            holdout = self._manifest(model, version).metrics
            for name, value in metrics.items():
                self.live.labels(model, str(version), name).set(value)
                if (reference := holdout_value(holdout, name)) is not None:
                    self.holdout.labels(model, str(version), name).set(reference)
                seen.add((model, str(version), name))
        return live


def holdout_value(metrics: dict[str, float], name: str) -> float | None:
    """A manifest's holdout value of ``name``: the metric itself, else the PyTorch model's (the
    TorchScript that Triton and TorchServe serve), else the TensorFlow one's."""
    for key in (name, f"pytorch_{name}", f"tensorflow_{name}"):
        if key in metrics:
            return metrics[key]
    return None


def run_forever(exporter: QualityExporter, interval_s: float, stop: Any) -> None:
    """The quality loop (a thread of the exporter process): a store outage skips a round."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            exporter.collect_once()
        except Exception as error:  # a round that fails is retried, never fatal
            log.warning("quality collection skipped: %s", error)
        stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
