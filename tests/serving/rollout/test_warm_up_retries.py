"""A blue-green warm-up request retries "not in time" answers (503/504) and nothing else."""

from __future__ import annotations

import httpx

from serving.rollout.blue_green import WARMUP_ATTEMPTS, _pinned_inference


def answers(*statuses: int) -> tuple[httpx.Client, list[int]]:
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(statuses[min(len(sent), len(statuses)) - 1], json={})

    return httpx.Client(transport=httpx.MockTransport(handler)), sent


def test_a_cold_server_that_answers_on_the_third_try_passes() -> None:
    client, sent = answers(503, 504, 200)
    assert _pinned_inference(client, "http://gateway/infer", {}).status_code == 200 and len(sent) == 3


def test_a_server_that_never_answers_in_time_fails_after_the_last_attempt() -> None:
    client, sent = answers(503)
    assert _pinned_inference(client, "http://gateway/infer", {}).status_code == 503
    assert len(sent) == WARMUP_ATTEMPTS


def test_a_broken_answer_is_not_retried() -> None:
    for status in (400, 500):
        client, sent = answers(status)
        assert _pinned_inference(client, "http://gateway/infer", {}).status_code == status and len(sent) == 1
