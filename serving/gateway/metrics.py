"""The gateway's Prometheus metrics, created on a registry passed in (no globals).

Label children are cached per (model, variant) so the hot path does one dict lookup instead of
prometheus-client's label resolution. ``docs/operations.md`` lists every name; a test checks the
list against what ``/metrics`` exports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
DISAGREEMENT_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.5, 1.0)


@dataclass(slots=True)
class VariantMetrics:
    """Children of the per-variant metrics, resolved once."""

    requests: Any
    latency: Any


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "flywheel_gateway_requests",
            "Inference requests answered, by model, variant, version and backend.",
            ["model", "variant", "version", "backend"],
            registry=registry,
        )
        self.errors = Counter(
            "flywheel_gateway_errors",
            "Failed requests by model, variant (empty when none was chosen) and error class.",
            ["model", "variant", "error_class"],
            registry=registry,
        )
        self.latency = Histogram(
            "flywheel_gateway_request_duration_seconds",
            "Time from routing to the backend's answer, per model and variant.",
            ["model", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.start_time = Gauge(
            "flywheel_gateway_start_time_seconds",
            "When this gateway process started (Unix time): a change means its counters restarted.",
            registry=registry,
            # Workers: the first one's start. A worker's restart keeps the sums (its dead files
            # still count), so only a new gateway, whose counters do restart, moves it.
            multiprocess_mode="min",
        )
        self.start_time.set_to_current_time()
        self.replica_requests = Counter(
            "flywheel_gateway_replica_requests",
            "Requests sent to each model-server replica, by outcome (ok, unavailable, not_loaded).",
            ["kind", "replica", "outcome"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "flywheel_gateway_in_flight_requests",
            "Requests being served now, per model.",
            ["model"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.retries = Counter(
            "flywheel_gateway_failovers",
            "Requests retried on another variant because their server was unreachable.",
            ["model", "from_variant", "to_variant"],
            registry=registry,
        )
        self.breaker_skips = Counter(
            "flywheel_gateway_breaker_skips",
            "Routed requests sent to another variant first because this one's circuit breaker was open.",
            ["model", "variant"],
            registry=registry,
        )
        self.shadow_requests = Counter(
            "flywheel_gateway_shadow_requests",
            "Shadow copies sent, by outcome (ok or an error class).",
            ["model", "variant", "outcome"],
            registry=registry,
        )
        self.shadow_disagreement = Histogram(
            "flywheel_gateway_shadow_disagreement",
            "Mean absolute difference between the primary's and the shadow's predictions.",
            ["model", "variant"],
            buckets=DISAGREEMENT_BUCKETS,
            registry=registry,
        )
        self.shadow_latency_delta = Histogram(
            "flywheel_gateway_shadow_latency_delta_seconds",
            "Shadow latency minus primary latency (positive: the shadow is slower).",
            ["model", "variant"],
            buckets=(-0.1, -0.01, -0.001, 0.0, 0.001, 0.01, 0.1, 1.0),
            registry=registry,
        )
        self.feedback = Counter(
            "flywheel_gateway_feedback",
            "Feedback received for served requests, per variant.",
            ["model", "variant"],
            registry=registry,
        )
        self.reward = Counter(
            "flywheel_gateway_feedback_reward",
            "Sum of rewards received (divide by flywheel_gateway_feedback_total for the mean).",
            ["model", "variant"],
            registry=registry,
        )
        self.spec_revision = Gauge(
            "flywheel_gateway_routing_spec_revision",
            "Revision of the routing spec each model is served with.",
            ["model"],
            registry=registry,
            multiprocess_mode="livemin",  # the oldest revision a live worker still serves
        )
        self.profile_bins = Counter(
            "flywheel_gateway_profile_bin",
            "Sampled live inputs and predictions counted into the reference profile's bins.",
            ["model", "version", "feature", "bin"],
            registry=registry,
        )
        self.profile_samples = Counter(
            "flywheel_gateway_profile_samples",
            "Rows counted into the profile bins, per model and version.",
            ["model", "version"],
            registry=registry,
        )
        self._variants: dict[tuple[str, str, int, str], VariantMetrics] = {}
        self._in_flight: dict[str, Any] = {}
        self._replica_attempts: dict[tuple[str, str, str], Any] = {}

    def variant(self, model: str, variant: str, version: int, backend: str) -> VariantMetrics:
        key = (model, variant, version, backend)
        children = self._variants.get(key)
        if children is None:
            children = VariantMetrics(
                self.requests.labels(model, variant, str(version), backend),
                self.latency.labels(model, variant),
            )
            self._variants[key] = children
        return children

    def count_replica_attempt(self, kind: str, replica: str, outcome: str) -> None:
        """One request sent to a server replica (a cached child: this runs on every request)."""
        key = (kind, replica, outcome)
        child = self._replica_attempts.get(key)
        if child is None:
            child = self._replica_attempts[key] = self.replica_requests.labels(kind, replica, outcome)
        child.inc()

    def in_flight_for(self, model: str) -> Any:
        child = self._in_flight.get(model)
        if child is None:
            child = self._in_flight[model] = self.in_flight.labels(model)
        return child

    def exported_names(self) -> set[str]:
        """Metric family names as they appear in the exposition (counters gain ``_total``)."""
        return {
            family.name + ("_total" if family.type == "counter" else "") for family in self.registry.collect()
        }
