"""Circuit breakers: a failed variant is routed around, then probed by one request at a time."""

from __future__ import annotations

import time

from serving.gateway.breaker import CircuitBreakers
from tests.support import wait_until

KEY = ("model", "torchserve-v1")


def test_a_failure_opens_the_breaker_and_one_trial_at_a_time_closes_it() -> None:
    breakers = CircuitBreakers(cool_down_s=0.05)
    assert breakers.available(KEY) and not breakers.begin(KEY), "closed: no trial needed"
    breakers.failure(KEY)
    assert not breakers.available(KEY) and KEY in breakers.open_variants()
    wait_until(lambda: breakers.available(KEY), 5, "the cool-down")
    assert breakers.begin(KEY), "the first request after the cool-down is the trial"
    assert not breakers.available(KEY) and not breakers.begin(KEY), "only one trial at a time"
    breakers.failure(KEY)  # the trial failed: open again
    assert not breakers.available(KEY)
    wait_until(lambda: breakers.available(KEY), 5, "the second cool-down")
    assert breakers.begin(KEY)
    breakers.success(KEY, time.monotonic())
    assert breakers.available(KEY) and breakers.open_variants() == []


def test_an_answer_to_a_request_sent_before_the_failure_does_not_close_the_breaker() -> None:
    """A draining server still finishes what it had: those answers prove nothing about it now."""
    breakers = CircuitBreakers(cool_down_s=60)
    sent_before = time.monotonic()
    breakers.failure(KEY)
    breakers.success(KEY, sent_before)
    assert not breakers.available(KEY)
    breakers.success(KEY, time.monotonic())
    assert breakers.available(KEY)


def test_a_trial_that_ends_without_a_verdict_frees_the_slot() -> None:
    breakers = CircuitBreakers(cool_down_s=0.0)
    breakers.failure(KEY)
    assert breakers.begin(KEY)
    breakers.end_trial(KEY)  # e.g. the request itself was malformed: the server said nothing
    assert breakers.available(KEY) and breakers.begin(KEY)
