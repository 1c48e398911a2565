"""Blue-green rollouts: warm green up beside blue, switch atomically, bake, then retire blue.

Phases, each ended by one compare-and-swap write of the spec:

1. **warming**: green is loaded beside blue with no traffic. The controller checks its readiness,
   waits until blue has served ``min_requests`` since warming began (that window is the bake's
   latency baseline), and sends green ``warmup_requests`` real inferences, each also sent to blue;
   any error, or a mean absolute difference between their answers above
   ``max_warmup_mean_abs_diff``, discards green.
2. **switch**: ``active`` flips to green in one write; gateways swap routers whole, so no request
   is dropped or split. Blue stays loaded and idle.
3. **baking**: for ``interval_s`` green's live window is analysed against blue's last live
   window (errors, p99, prediction PSI). A failure flips straight back to blue; passing retires
   blue (green alone, ``single``) and makes green the champion.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_fixed

from serving.protocols.examples import example_inputs, v2_request
from serving.rollout.analysis import DEFAULT_THRESHOLDS, VariantCounters, Verdict, analyse, counters_json
from serving.rollout.context import RolloutContext
from serving.rollout.label_checks import with_quality
from serving.routing import operations
from serving.routing.spec import RoutingSpec, Variant

DEFAULT_WARMUP_REQUESTS = 10
DEFAULT_MAX_WARMUP_MEAN_ABS_DIFF = 1.0


def _sample_inputs(signature: dict[str, Any], seed: int) -> dict[str, Any]:
    """One row of example inputs in the signature's own datatypes (not always FP32)."""
    arrays = example_inputs(signature["inputs"], rows=1, seed=seed)
    return v2_request(arrays, {spec["name"]: spec["datatype"] for spec in signature["inputs"]})


#: Answers that say "not in time" (the gateway's backend timeout, a server still busy with its first
#: inference after a load on a saturated node), retried before they count against green. Any
#: other failure, or a timeout on every attempt, discards it.
TRANSIENT_STATUSES = frozenset({503, 504})
WARMUP_ATTEMPTS = 3


def _pinned_inference(client: httpx.Client, url: str, body: dict[str, Any]) -> httpx.Response:
    retrying = Retrying(
        retry=retry_if_result(lambda response: response.status_code in TRANSIENT_STATUSES),
        stop=stop_after_attempt(WARMUP_ATTEMPTS),
        wait=wait_fixed(0.5),
        retry_error_callback=lambda state: (
            state.outcome.result() if state.outcome else None
        ),  # the last answer
    )
    response: httpx.Response = retrying(client.post, url, json=body)
    return response


def warm_up(
    gateway_url: str, model: str, blue: Variant, green: Variant, thresholds: dict[str, float]
) -> list[str]:
    """Problems seen sending the same requests to blue and green (pinned); empty when fine."""
    count = int(thresholds.get("warmup_requests", DEFAULT_WARMUP_REQUESTS))
    limit = thresholds.get("max_warmup_mean_abs_diff", DEFAULT_MAX_WARMUP_MEAN_ABS_DIFF)
    base = f"{gateway_url}/v2/models/{model}"
    with httpx.Client(timeout=30) as client:
        signature = client.get(f"{base}/versions/{green.version}").json()
        differences = []
        for seed in range(count):
            body = _sample_inputs(signature, seed)
            answers = []
            for variant in (blue, green):
                response = _pinned_inference(client, f"{base}/versions/{variant.version}/infer", body)
                if response.status_code != 200:
                    failure = f"{response.status_code} {response.text[:200]}"
                    return [f"warm-up request {seed + 1} to {variant.name} failed: {failure}"]
                output = response.json()["outputs"][0]
                answers.append(np.asarray(output["data"], dtype=np.float64))
            differences.append(float(np.mean(np.abs(answers[0] - answers[1]))))
    mean_difference = float(np.mean(differences))
    if mean_difference > limit:
        return [f"warm-up answers differ from blue's by {mean_difference:.4g} on average (limit {limit})"]
    return []


def drive(context: RolloutContext, spec: RoutingSpec) -> dict[str, Any] | None:
    rollout = spec.rollout
    assert rollout is not None and rollout.kind == "blue_green"
    blue, green = spec.variant(rollout.stable), spec.variant(rollout.candidate)
    now = context.source.snapshot(spec.model, {blue.name: blue.version, green.name: green.version})
    thresholds = spec.params.analysis
    if rollout.phase == "warming":
        if not rollout.baseline:
            return context.write(
                spec,
                lambda current: operations.update_rollout(
                    current, baseline=counters_json(now), step_started_at=datetime.now(UTC)
                ),
                f"blue-green: warming {green.name} beside {blue.name}",
                "baseline taken",
                {},
            )
        checked = context.readiness_verdict(spec, green.version, Verdict(True, [], {}))
        if checked is None:
            waiting = context.replica_problems(spec, green.version)
            return context.record_hold(
                spec,
                Verdict(None, [f"waiting for {green.name}: " + "; ".join(waiting)], {}),
                "blue-green warm-up",
            )
        problems = checked.reasons if checked.passed is False else []
        blue_window = now[blue.name].minus(VariantCounters.from_json(rollout.baseline[blue.name]))
        if not problems and blue_window.requests < {**DEFAULT_THRESHOLDS, **thresholds}["min_requests"]:
            # Blue's window since warming began is the bake's latency baseline (after the switch
            # blue gets nothing): too few requests in it and green's p99 could never be judged, so
            # a slow green would pass. Wait for traffic, as a canary step waits for its requests.
            return None
        if not problems:
            problems = warm_up(context.gateway_url, spec.model, blue, green, thresholds)
        if problems:
            verdict = Verdict(False, problems, {})
            return context.write(
                spec,
                lambda current: operations.update_rollout(
                    operations.keep_only(current, blue.name),
                    status="rolled_back",
                    last_verdict=verdict.to_json(),
                ),
                f"blue-green: discard {green.name} before the switch",
                "; ".join(problems),
                verdict.to_json(),
            )
        switched = {"blue_window": blue_window.to_json(), green.name: now[green.name].to_json()}
        return context.write(
            spec,
            # promote() ended the rollout; the bake keeps it running.
            lambda current: operations.update_rollout(
                operations.promote(current, green.name),
                baseline=switched,
                step_started_at=datetime.now(UTC),
                phase="baking",
                status="running",
            ),
            f"blue-green: switch all traffic to {green.name}",
            "warm-up passed: ready, answers close to blue's",
            {},
        )
    green_window = now[green.name].minus(VariantCounters.from_json(rollout.baseline[green.name]))
    blue_window = VariantCounters.from_json(rollout.baseline["blue_window"])
    baked = (datetime.now(UTC) - rollout.step_started_at).total_seconds() >= rollout.interval_s
    verdict = analyse(
        blue_window,
        green_window,
        thresholds,
        baked,
        candidate_reference=context.reference(spec.model, green.version),
    )
    # Labels and CBPE (label_checks.py); blue's window is its last live one, before the switch.
    verdict = with_quality(
        verdict, context.quality(spec, blue, green, {blue.name: blue_window, green.name: green_window})
    )
    checked = context.readiness_verdict(spec, green.version, verdict)
    if checked is None:
        waiting = context.replica_problems(spec, green.version)
        return context.record_hold(
            spec, Verdict(None, [f"waiting for {green.name}: " + "; ".join(waiting)], {}), "blue-green bake"
        )
    verdict = checked
    if verdict.passed is False:
        return context.write(
            spec,
            lambda current: operations.update_rollout(
                operations.promote(current, blue.name), status="rolled_back", last_verdict=verdict.to_json()
            ),
            f"blue-green: switch back to {blue.name}",
            "; ".join(verdict.reasons),
            verdict.to_json(),
        )
    if verdict.passed is None:
        if any(reason.startswith("holding:") for reason in verdict.reasons):
            return context.record_hold(spec, verdict, "blue-green bake")
        return None
    decision = context.write(
        spec,
        lambda current: operations.update_rollout(
            operations.keep_only(current, green.name), status="promoted", last_verdict=verdict.to_json()
        ),
        f"blue-green: retire {blue.name}",
        "; ".join(verdict.reasons),
        verdict.to_json(),
        champion=green.version,
    )
    context.lease.release(spec.model)
    return decision
