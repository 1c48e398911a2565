"""Canary analysis: the candidate against the stable variant over the same window.

Metrics come through :class:`MetricsSource`. The embedded default,
:class:`GatewayMetricsSource`, scrapes one gateway's ``/metrics``; counters are cumulative, so
a window is "now minus the snapshot taken when the step started" (the snapshot is stored in the
rollout state and survives a controller restart). A Prometheus-backed source for several
gateway replicas implements the same ``snapshot``.

Checks, each with a reason in the verdict:

- **errors**: failed requests plus requests the gateway had to fail over away from the
  candidate, over the candidate's requests; must stay under ``max_error_rate`` and within
  ``max_error_rate`` of the stable variant's;
- **latency**: the candidate's p99 (from the histogram buckets of the window) at most
  ``max_p99_ratio`` times the stable p99 (with ``min_p99_slack_s`` of slack for tiny numbers),
  judged once the candidate has ``min_latency_requests`` requests and the stable ``min_requests``:
  a p99 of fewer samples is their maximum, and one scheduler hiccup on a busy node would roll
  back a good version (at the 100 % step the stable's window holds only stragglers);
- **prediction drift**: PSI of the candidate's live prediction histogram (the gateway's drift
  sampling bins) against the candidate's *own* reference (its profile.json, from its validation
  set) at most ``max_prediction_psi``. Not against the stable version: after a retrain for
  drift the stable version is the stale one, and a good candidate predicts differently from it
  (a classifier retrained on inverted images spreads its classes where the stale one piled them
  up). A candidate without a profile (an imported model) is compared with the stable version;

- **quality**, where feedback arrives (``/v2/models/{m}/feedback``): the posterior probability
  that the candidate's reward rate is below the stable one's (Beta posteriors), failing once it
  passes ``quality_confidence`` with at least ``min_feedback`` events: a sequential decision
  that waits for evidence rather than a fixed threshold on two noisy means;
- **readiness** is checked by the controller through the gateway before each decision.

A failing check fails the step at once, even before the bake interval ends (that is what keeps
a bad candidate's share of traffic small). Passing needs the interval to be over and at least
``min_requests`` candidate requests (and ``min_latency_requests``, so that latency was judged):
a quiet step waits for evidence instead of passing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

DEFAULT_THRESHOLDS = {
    "max_error_rate": 0.02,
    "max_p99_ratio": 3.0,
    "min_p99_slack_s": 0.005,
    "min_latency_requests": 200,
    # Loose on purpose: live traffic moves too; this catches gross breakage (predictions piled into
    # the extreme bins of the candidate's own reference score about 5).
    "max_prediction_psi": 3.0,
    "min_requests": 30,
    # Quality from feedback: fail when P(candidate's reward rate < stable's) exceeds this.
    "quality_confidence": 0.95,
    "min_feedback": 20,
    # CBPE (classifiers): a candidate estimated this far below its own validation accuracy holds
    # until labels confirm it.
    "max_estimated_accuracy_drop": 0.1,
    # ... and fails the step when no joined label confirmed the candidate this long into it.
    "max_label_wait_s": 3600.0,
}


@dataclass
class VariantCounters:
    """Cumulative counters of one variant (and its version's prediction bins)."""

    requests: float = 0.0
    errors: float = 0.0
    latency_buckets: dict[str, float] = field(default_factory=dict)  # le -> cumulative count
    prediction_bins: dict[str, float] = field(default_factory=dict)  # bin -> count
    feedback: float = 0.0  # feedback events received for this variant's answers
    reward: float = 0.0  # sum of their rewards, each in [0, 1]
    #: Requests the gateway failed over *away from* this variant (its server down or reloading).
    failovers: float = 0.0
    #: Requests routed to this variant but sent elsewhere first because its circuit breaker was
    #: open (its server had just failed): evidence of disruption, not errors of the variant.
    skipped: float = 0.0
    #: Identity of the counters' source: the gateway's start time (summed over replicas). A
    #: change means some counter restarted from zero, whatever the values look like.
    epoch: float = 0.0
    #: A classifier's max-softmax confidence counts by its profile's bins (CBPE's input).
    confidence_bins: dict[str, float] = field(default_factory=dict)

    def minus(self, base: VariantCounters) -> VariantCounters:
        return VariantCounters(
            self.requests - base.requests,
            self.errors - base.errors,
            {le: count - base.latency_buckets.get(le, 0.0) for le, count in self.latency_buckets.items()},
            {b: count - base.prediction_bins.get(b, 0.0) for b, count in self.prediction_bins.items()},
            self.feedback - base.feedback,
            self.reward - base.reward,
            self.failovers - base.failovers,
            self.skipped - base.skipped,
            self.epoch - base.epoch,
            {b: count - base.confidence_bins.get(b, 0.0) for b, count in self.confidence_bins.items()},
        )

    def reset_since(self, base: VariantCounters) -> str | None:
        """Why the window from ``base`` to now is not a window (a counter restarted), or None."""
        if self.epoch != base.epoch:
            return "the gateway restarted (its start time changed)"
        window = self.minus(base)
        scalars = (
            window.requests,
            window.errors,
            window.feedback,
            window.reward,
            window.failovers,
            window.skipped,
        )
        series = [
            *window.latency_buckets.values(),
            *window.prediction_bins.values(),
            *window.confidence_bins.values(),
        ]
        if any(value < 0 for value in (*scalars, *series)):
            return "a counter went backwards (a gateway restarted)"
        return None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VariantCounters:
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})


def counters_json(counters: dict[str, VariantCounters]) -> dict[str, Any]:
    """Counters per variant as stored in the rollout state's baseline."""
    return {name: value.to_json() for name, value in counters.items()}


class MetricsSource(Protocol):
    def snapshot(self, model: str, variants: dict[str, int]) -> dict[str, VariantCounters]:
        """Cumulative counters per variant name (``variants`` maps name -> version)."""
        ...


class GatewayMetricsSource:
    """Scrapes one gateway's Prometheus endpoint (the embedded, single-replica default)."""

    def __init__(self, metrics_url: str, timeout_s: float = 5.0) -> None:
        self.metrics_url = metrics_url
        self.timeout_s = timeout_s

    def snapshot(self, model: str, variants: dict[str, int]) -> dict[str, VariantCounters]:
        return self.parse(httpx.get(self.metrics_url, timeout=self.timeout_s).text, model, variants)

    @staticmethod
    def parse(text: str, model: str, variants: dict[str, int]) -> dict[str, VariantCounters]:
        """The counters of ``variants`` in one Prometheus exposition of a gateway."""
        counters = {name: VariantCounters() for name in variants}
        by_version = {str(version): name for name, version in variants.items()}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "flywheel_gateway_start_time_seconds":  # unlabelled: per process
                    for item in counters.values():
                        item.epoch = sample.value
                    continue
                if labels.get("model") != model:
                    continue
                if sample.name == "flywheel_gateway_requests_total" and labels.get("variant") in counters:
                    counters[labels["variant"]].requests += sample.value
                elif sample.name == "flywheel_gateway_errors_total" and labels.get("variant") in counters:
                    counters[labels["variant"]].errors += sample.value
                elif (
                    sample.name == "flywheel_gateway_failovers_total"
                    and labels.get("from_variant") in counters
                ):
                    # Served by another variant, but a failure of this one: counted against it.
                    counters[labels["from_variant"]].errors += sample.value
                    counters[labels["from_variant"]].requests += sample.value
                    counters[labels["from_variant"]].failovers += sample.value
                elif (
                    sample.name == "flywheel_gateway_breaker_skips_total"
                    and labels.get("variant") in counters
                ):
                    counters[labels["variant"]].skipped += sample.value
                elif (
                    sample.name == "flywheel_gateway_request_duration_seconds_bucket"
                    and labels.get("variant") in counters
                ):
                    counters[labels["variant"]].latency_buckets[labels["le"]] = sample.value
                elif sample.name == "flywheel_gateway_feedback_total" and labels.get("variant") in counters:
                    counters[labels["variant"]].feedback += sample.value
                elif (
                    sample.name == "flywheel_gateway_feedback_reward_total"
                    and labels.get("variant") in counters
                ):
                    counters[labels["variant"]].reward += sample.value
                elif (
                    sample.name == "flywheel_gateway_profile_bin_total"
                    and labels.get("feature") in ("prediction", "confidence")
                    and labels.get("version") in by_version
                ):
                    item = counters[by_version[labels["version"]]]
                    bins = item.prediction_bins if labels["feature"] == "prediction" else item.confidence_bins
                    bins[labels["bin"]] = sample.value
        return counters


def p99(buckets: dict[str, float]) -> float | None:
    """The 99th percentile's upper bucket bound (what histogram_quantile would interpolate)."""
    ordered = sorted(((math.inf if le == "+Inf" else float(le)), count) for le, count in buckets.items())
    total = ordered[-1][1] if ordered else 0
    if total <= 0:
        return None
    for bound, count in ordered:
        if count >= 0.99 * total:
            return bound
    return math.inf


def reference_bins(profile: dict[str, Any]) -> dict[str, float] | None:
    """A profile's prediction frequencies keyed like the gateway's bins (``"0"``, ``"1"``, ...)."""
    frequencies = (profile.get("prediction") or {}).get("frequencies")
    return {str(index): float(value) for index, value in enumerate(frequencies)} if frequencies else None


def psi(expected: dict[str, float], actual: dict[str, float]) -> float | None:
    """Population stability index between two binned distributions (0.001 floor per bin)."""
    bins = set(expected) | set(actual)
    total_e, total_a = sum(expected.values()), sum(actual.values())
    if total_e <= 0 or total_a <= 0:
        return None
    value = 0.0
    for b in bins:
        e = max(expected.get(b, 0.0) / total_e, 1e-3)
        a = max(actual.get(b, 0.0) / total_a, 1e-3)
        value += (a - e) * math.log(a / e)
    return value


def probability_worse(stable: VariantCounters, candidate: VariantCounters, draws: int = 4000) -> float | None:
    """P(candidate's reward rate < stable's) under Beta(1 + rewards, 1 + misses) posteriors.

    A sequential check: it is re-evaluated every tick as feedback arrives and only decides once
    the posterior is confident, instead of comparing two noisy means at a fixed sample size.
    Monte Carlo with a fixed seed, so the same counts always give the same answer.
    """
    if stable.feedback <= 0 or candidate.feedback <= 0:
        return None
    rng = np.random.default_rng(0)
    stable_rate = rng.beta(1 + stable.reward, 1 + stable.feedback - stable.reward, draws)
    candidate_rate = rng.beta(1 + candidate.reward, 1 + candidate.feedback - candidate.reward, draws)
    return float(np.mean(candidate_rate < stable_rate))


@dataclass
class Verdict:
    passed: bool | None  # None: not enough evidence yet
    reasons: list[str]
    metrics: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "metrics": self.metrics}


def stable_disrupted(stable: VariantCounters, max_error_rate: float) -> bool:
    """Enough of the stable's traffic went elsewhere to spoil the comparison: at least 3 requests
    and more than ``max_error_rate`` of its share (one hiccup in thousands does not count)."""
    moved = stable.failovers + stable.skipped
    routed = stable.requests + stable.skipped  # failovers are already counted in requests
    return moved >= 3 and moved > max_error_rate * max(routed, 1.0)


def analyse(
    stable: VariantCounters,
    candidate: VariantCounters,
    thresholds: dict[str, float],
    interval_over: bool,
    stable_has_traffic: bool = False,
    candidate_reference: dict[str, float] | None = None,
) -> Verdict:
    """The verdict on one window. ``stable_has_traffic``: the split sends the stable variant requests
    in this step (a canary below 100 %), so a pass also waits for enough of those to compare with.
    ``candidate_reference``: the candidate's reference prediction frequencies by bin, from its
    profile; without one the candidate's predictions are compared with the stable's.
    """
    limits = {**DEFAULT_THRESHOLDS, **thresholds}
    metrics: dict[str, Any] = {"candidate_requests": candidate.requests, "stable_requests": stable.requests}
    failures: list[str] = []
    if candidate.requests > 0:
        candidate_errors = candidate.errors / candidate.requests
        stable_errors = stable.errors / stable.requests if stable.requests > 0 else 0.0
        metrics |= {
            "candidate_error_rate": round(candidate_errors, 4),
            "stable_error_rate": round(stable_errors, 4),
        }
        enough_to_fail = candidate.errors >= 3  # one unlucky error must not end a rollout
        if enough_to_fail and (
            candidate_errors > limits["max_error_rate"]
            and candidate_errors > stable_errors + limits["max_error_rate"]
        ):
            limit = limits["max_error_rate"]
            failures.append(
                f"error rate {candidate_errors:.1%} over {limit:.1%} (stable {stable_errors:.1%})"
            )
    candidate_p99, stable_p99 = p99(candidate.latency_buckets), p99(stable.latency_buckets)
    metrics |= {"candidate_p99_s": candidate_p99, "stable_p99_s": stable_p99}
    # Both sides need a sample: a stable p99 from a handful of requests (the stragglers of the
    # last step, once the candidate has 100 %) is their maximum, not a baseline.
    enough = (
        candidate.requests >= limits["min_latency_requests"] and stable.requests >= limits["min_requests"]
    )
    if candidate_p99 is not None and stable_p99 is not None and enough:
        allowed = max(stable_p99 * limits["max_p99_ratio"], stable_p99 + limits["min_p99_slack_s"])
        if candidate_p99 > allowed:
            failures.append(f"p99 {candidate_p99 * 1000:.1f} ms over {allowed * 1000:.1f} ms allowed")
    against = "its own reference" if candidate_reference else "stable"
    drift = psi(candidate_reference or stable.prediction_bins, candidate.prediction_bins)
    metrics["prediction_psi"] = None if drift is None else round(drift, 3)
    metrics["prediction_psi_against"] = against
    if (
        drift is not None
        and sum(candidate.prediction_bins.values()) >= 20
        and drift > limits["max_prediction_psi"]
    ):
        failures.append(f"prediction PSI {drift:.2f} against {against} over {limits['max_prediction_psi']}")
    worse = probability_worse(stable, candidate)
    metrics["p_candidate_worse"] = None if worse is None else round(worse, 4)
    if (
        worse is not None
        and candidate.feedback >= limits["min_feedback"]
        and worse > limits["quality_confidence"]
    ):
        failures.append(f"feedback says the candidate is worse (P = {worse:.3f})")
    if failures:
        return Verdict(False, failures, metrics)
    if stable_has_traffic and stable_disrupted(stable, limits["max_error_rate"]):
        # The stable's server was down or reloading, so the candidate took its traffic too: that
        # is no evidence for the candidate, so the step neither passes nor advances.
        return Verdict(
            None,
            [
                "holding: requests failed over away from the stable variant (its server down or "
                "reloading) in this window; the candidate's traffic in it proves nothing"
            ],
            metrics | {"stable_failovers": stable.failovers, "stable_skipped": stable.skipped},
        )
    if not interval_over:
        return Verdict(None, ["baking"], metrics)
    needed = max(limits["min_requests"], limits["min_latency_requests"])  # a pass needs a latency verdict
    if candidate.requests < needed:
        return Verdict(None, [f"waiting for {needed:.0f} candidate requests"], metrics)
    if stable_has_traffic and (stable.requests < limits["min_requests"] or stable_p99 is None):
        return Verdict(None, [f"waiting for {limits['min_requests']:.0f} stable requests"], metrics)
    return Verdict(True, ["errors, latency and predictions within bounds"], metrics)


class PrometheusMetricsSource:
    """The same counters, summed over every gateway replica Prometheus scrapes.

    Instant queries of the cumulative series (``sum by (...)``), so windows are still "now minus
    the step's snapshot", exactly as with :class:`GatewayMetricsSource`. A counter reset (a
    replica restarting) shows up as a negative window and holds the decision for a tick.
    """

    def __init__(self, prometheus_url: str, timeout_s: float = 5.0) -> None:
        self.prometheus_url = prometheus_url.rstrip("/")
        self.timeout_s = timeout_s

    def _query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=self.timeout_s
        )
        response.raise_for_status()
        return list(response.json()["data"]["result"])

    def snapshot(self, model: str, variants: dict[str, int]) -> dict[str, VariantCounters]:
        counters = {name: VariantCounters() for name in variants}
        selector = f'model="{model}"'
        simple = {
            "requests": "flywheel_gateway_requests_total",
            "errors": "flywheel_gateway_errors_total",
            "feedback": "flywheel_gateway_feedback_total",
            "reward": "flywheel_gateway_feedback_reward_total",
        }
        for attribute, metric in simple.items():
            for row in self._query(f"sum by (variant) ({metric}{{{selector}}})"):
                name = row["metric"].get("variant")
                if name in counters:
                    setattr(counters[name], attribute, float(row["value"][1]))
        for row in self._query(f"sum by (from_variant) (flywheel_gateway_failovers_total{{{selector}}})"):
            name = row["metric"].get("from_variant")
            if name in counters:
                counters[name].errors += float(row["value"][1])
                counters[name].requests += float(row["value"][1])
                counters[name].failovers += float(row["value"][1])
        for row in self._query(f"sum by (variant) (flywheel_gateway_breaker_skips_total{{{selector}}})"):
            name = row["metric"].get("variant")
            if name in counters:
                counters[name].skipped = float(row["value"][1])
        # Summed start times of every replica: any replica restarting changes it.
        for row in self._query("sum(flywheel_gateway_start_time_seconds)"):
            for item in counters.values():
                item.epoch = float(row["value"][1])
        for row in self._query(
            f"sum by (variant, le) (flywheel_gateway_request_duration_seconds_bucket{{{selector}}})"
        ):
            name = row["metric"].get("variant")
            if name in counters:
                counters[name].latency_buckets[row["metric"]["le"]] = float(row["value"][1])
        by_version = {str(version): name for name, version in variants.items()}
        query = (
            f"sum by (version, feature, bin) "
            f'(flywheel_gateway_profile_bin_total{{{selector},feature=~"prediction|confidence"}})'
        )
        for row in self._query(query):
            name = by_version.get(row["metric"].get("version", ""))
            if name is not None:
                item = counters[name]
                bins = (
                    item.prediction_bins if row["metric"]["feature"] == "prediction" else item.confidence_bins
                )
                bins[row["metric"]["bin"]] = float(row["value"][1])
        return counters
