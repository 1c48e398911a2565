"""Canary analysis on counter windows: what passes, what fails at once, what waits for evidence."""

from __future__ import annotations

import pytest

from serving.rollout.analysis import VariantCounters, analyse, p99, psi

FAST = {"0.005": 99.0, "0.01": 100.0, "+Inf": 100.0}
SLOW = {"0.005": 0.0, "0.01": 0.0, "0.05": 60.0, "0.1": 100.0, "+Inf": 100.0}
BINS = {"0": 10.0, "1": 30.0, "2": 30.0, "3": 30.0}


def counters(
    requests: float, errors: float = 0, buckets: dict[str, float] = FAST, bins: dict[str, float] = BINS
) -> VariantCounters:
    return VariantCounters(requests, errors, dict(buckets), dict(bins))


def test_p99_and_psi() -> None:
    assert p99(FAST) == 0.005 and p99(SLOW) == 0.1 and p99({}) is None
    assert psi(BINS, BINS) == pytest.approx(0.0)
    assert psi(BINS, {"0": 100.0}) > 2
    assert psi({}, BINS) is None


def test_a_healthy_candidate_passes_only_after_the_bake_with_enough_requests() -> None:
    stable, candidate = counters(300), counters(300)
    assert analyse(stable, candidate, {}, interval_over=False).passed is None
    assert analyse(stable, counters(5), {}, interval_over=True).passed is None
    # Enough for min_requests but not for a p99: passing waits for the latency verdict.
    assert analyse(stable, counters(100), {}, interval_over=True).passed is None
    verdict = analyse(stable, candidate, {}, interval_over=True)
    assert verdict.passed is True and verdict.metrics["candidate_error_rate"] == 0


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (counters(100, errors=20), "error rate 20.0%"),
        (counters(300, buckets=SLOW), "p99 100.0 ms"),
        (counters(100, bins={"3": 100.0}), "prediction PSI"),
    ],
)
def test_a_bad_candidate_fails_at_once_without_waiting_for_the_bake(
    candidate: VariantCounters, reason: str
) -> None:
    verdict = analyse(counters(300), candidate, {}, interval_over=False)
    assert verdict.passed is False and reason in verdict.reasons[0]


def test_a_p99_of_too_few_requests_is_not_judged() -> None:
    """Two slow requests in a hundred (a cold model, a busy node) are that sample's p99: not evidence."""
    few_slow = analyse(counters(300), counters(100, buckets=SLOW), {}, interval_over=False)
    assert few_slow.passed is None and few_slow.metrics["candidate_p99_s"] == 0.1
    judged = analyse(
        counters(300), counters(100, buckets=SLOW), {"min_latency_requests": 50}, interval_over=False
    )
    assert judged.passed is False and "p99" in judged.reasons[0]


def test_thresholds_come_from_the_spec_and_one_error_is_not_enough() -> None:
    assert analyse(counters(300), counters(200, errors=4), {}, interval_over=True).passed is True
    assert (
        analyse(counters(300), counters(200, errors=10), {"max_error_rate": 0.10}, interval_over=True).passed
        is True
    )
    window = counters(150, errors=3).minus(counters(50, errors=3))
    assert (window.requests, window.errors) == (100, 0)


def test_feedback_quality_waits_for_evidence_then_decides() -> None:
    def with_feedback(feedback: float, reward: float) -> VariantCounters:
        counters_ = counters(300)
        counters_.feedback, counters_.reward = feedback, reward
        return counters_

    stable = with_feedback(200, 140)  # 70 % hits
    few = analyse(stable, with_feedback(10, 2), {}, interval_over=True)
    assert few.passed is True, "10 events are not enough evidence to fail on"
    worse = analyse(stable, with_feedback(60, 24), {}, interval_over=False)  # 40 % hits
    assert worse.passed is False and "feedback says the candidate is worse" in worse.reasons[0]
    assert worse.metrics["p_candidate_worse"] > 0.99
    similar = analyse(stable, with_feedback(60, 41), {}, interval_over=True)
    assert similar.passed is True and similar.metrics["p_candidate_worse"] < 0.95


def test_a_window_across_a_counter_reset_is_no_window() -> None:
    """The step-2 window with stable_requests -12988 from the fault test: detected, never judged."""
    base = VariantCounters(13000, 0, dict(FAST), dict(BINS), epoch=1000.0)
    after_restart = VariantCounters(12, 0, {"0.005": 12.0, "+Inf": 12.0}, {"0": 12.0}, epoch=2000.0)
    assert after_restart.reset_since(base) is not None and "restarted" in after_restart.reset_since(base)
    # Same epoch (a Prometheus sum in which one replica restarted): a counter going backwards.
    backwards = VariantCounters(12, 0, dict(FAST), dict(BINS), epoch=1000.0)
    assert "backwards" in (backwards.reset_since(base) or "")
    grown = VariantCounters(13500, 1, {k: v + 10 for k, v in FAST.items()}, dict(BINS), epoch=1000.0)
    assert grown.reset_since(base) is None


def test_a_step_holds_while_the_stable_variant_was_failed_over() -> None:
    """Traffic the candidate took because the stable's server was down is no evidence for it."""
    stable = counters(300)
    stable.failovers = 40
    verdict = analyse(stable, counters(400), {}, interval_over=True, stable_has_traffic=True)
    assert verdict.passed is None and "failed over away from the stable" in verdict.reasons[0]
    # Requests the breaker sent elsewhere count the same way (without being errors).
    skipped = counters(300)
    skipped.skipped = 40
    assert analyse(skipped, counters(400), {}, interval_over=True, stable_has_traffic=True).passed is None
    # A candidate that fails on its own is still rolled back.
    failing = analyse(stable, counters(100, errors=20), {}, interval_over=True, stable_has_traffic=True)
    assert failing.passed is False
    # One hiccup in hundreds is not a disruption; nor is anything while the stable gets no traffic
    # by design (a blue-green bake, the 100 % step).
    hiccup = counters(300)
    hiccup.failovers = 2
    assert analyse(hiccup, counters(400), {}, interval_over=True, stable_has_traffic=True).passed is True
    assert analyse(stable, counters(400), {}, interval_over=True).passed is True


def test_a_pass_needs_stable_requests_while_the_stable_gets_traffic() -> None:
    verdict = analyse(counters(5), counters(300), {}, interval_over=True, stable_has_traffic=True)
    assert verdict.passed is None and "stable requests" in verdict.reasons[0]
    # At 100 % (or blue-green's bake) the stable gets nothing by design: no wait for it.
    assert analyse(counters(0), counters(300), {}, interval_over=True).passed is True


def test_the_gateway_source_reads_the_unlabelled_start_time_and_breaker_skips() -> None:
    """A scrape of a real gateway's exposition: the epoch must come through the model filter."""
    from prometheus_client import CollectorRegistry, generate_latest

    from serving.gateway.metrics import GatewayMetrics
    from serving.rollout.analysis import GatewayMetricsSource

    metrics = GatewayMetrics(CollectorRegistry())
    metrics.requests.labels("m", "stable", "1", "triton").inc(10)
    metrics.breaker_skips.labels("m", "stable").inc(4)
    text = generate_latest(metrics.registry).decode()

    counters = GatewayMetricsSource.parse(text, "m", {"stable": 1, "canary": 2})
    assert counters["stable"].requests == 10 and counters["stable"].skipped == 4
    assert counters["stable"].epoch > 0 and counters["canary"].epoch == counters["stable"].epoch


def test_a_stable_p99_from_a_few_stragglers_is_no_baseline() -> None:
    """The e2e rollback at 100 %: 23 stable requests (2 ms p99) against 380 candidate ones (10 ms)."""
    stragglers = counters(23)
    verdict = analyse(stragglers, counters(380, buckets=SLOW), {}, interval_over=True)
    assert verdict.passed is True, verdict
    # With a real stable sample the same candidate is judged, and fails.
    assert analyse(counters(300), counters(380, buckets=SLOW), {}, interval_over=True).passed is False


def test_a_retrain_after_drift_is_judged_against_its_own_reference_not_the_stale_stable() -> None:
    """A classifier retrained on inverted images spreads its classes where the stale stable one
    piles them into one class: against the stable version that is "gross disagreement"; against
    the candidate's own validation profile it is exactly what was expected."""
    reference = {str(index): 0.1 for index in range(10)}
    stale = counters(300, bins={"8": 280.0, "3": 20.0})
    healthy = counters(300, bins={str(index): 30.0 for index in range(10)})
    assert analyse(stale, healthy, {}, interval_over=True).passed is False, "the old comparison"
    verdict = analyse(stale, healthy, {}, interval_over=True, candidate_reference=reference)
    assert verdict.passed is True and verdict.metrics["prediction_psi_against"] == "its own reference"
    broken = counters(300, bins={"0": 150.0, "9": 150.0})  # a candidate answering in extreme bins
    failed = analyse(healthy, broken, {}, interval_over=False, candidate_reference=reference)
    assert failed.passed is False and "prediction PSI" in failed.reasons[0]
    assert "against its own reference" in failed.reasons[0]
