"""Canary rollouts: the candidate's share climbs through the steps while its window passes.

Each step bakes for ``interval_s``; the candidate's window (errors, failovers, p99, prediction
PSI, feedback quality) is analysed against the stable's, and the step moves on, promotes, or
rolls back by one CAS write. A candidate an agent cannot load rolls back at once with that
agent's reason; a replica still loading it holds the step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from serving.rollout.analysis import VariantCounters, Verdict, analyse, counters_json, stable_disrupted
from serving.rollout.context import RolloutContext, verdict_limit
from serving.rollout.label_checks import with_quality
from serving.routing import operations
from serving.routing.spec import RoutingSpec


def drive(context: RolloutContext, spec: RoutingSpec) -> dict[str, Any] | None:
    rollout = spec.rollout
    assert rollout is not None and rollout.kind == "canary"
    stable, candidate = spec.variant(rollout.stable), spec.variant(rollout.candidate)
    now = context.source.snapshot(
        spec.model, {stable.name: stable.version, candidate.name: candidate.version}
    )
    if not rollout.baseline:
        return context.write(
            spec,
            lambda current: operations.update_rollout(
                current, baseline=counters_json(now), step_started_at=datetime.now(UTC)
            ),
            f"step 1 of {len(rollout.steps)}: {rollout.weight:g}% to {candidate.name}",
            "baseline taken; baking",
            {},
        )
    step = f"step {rollout.step + 1} of {len(rollout.steps)} ({rollout.weight:g}%)"
    failed = context.failed_loads(spec, candidate.version)
    if failed:
        # Before any traffic judgement: a version an agent cannot load never gets better.
        verdict = Verdict(False, failed, {})
        return context.write(
            spec,
            lambda current: operations.update_rollout(
                operations.rollback(current), last_verdict=verdict.to_json()
            ),
            f"rollback at {step}",
            "; ".join(failed),
            verdict.to_json(),
        )
    baseline = {name: VariantCounters.from_json(rollout.baseline.get(name, {})) for name in now}
    reset = next((why for name in now if (why := now[name].reset_since(baseline[name]))), None)
    if reset is not None:
        # A step never passes or fails on a negative or partial window: start it again.
        return context.restart_window(spec, now, step, f"counters restarted: {reset}")
    window = {name: counters.minus(baseline[name]) for name, counters in now.items()}
    baked = (datetime.now(UTC) - rollout.step_started_at).total_seconds() >= rollout.interval_s
    verdict = analyse(
        window[stable.name],
        window[candidate.name],
        spec.params.analysis,
        baked,
        stable_has_traffic=rollout.weight < 100,
        candidate_reference=context.reference(spec.model, candidate.version),
    )
    verdict = with_quality(verdict, context.quality(spec, stable, candidate, window))
    moved = window[stable.name].failovers + window[stable.name].skipped
    if (
        verdict.passed is None
        and rollout.weight < 100
        and stable_disrupted(window[stable.name], verdict_limit(spec, "max_error_rate"))
    ):
        if context.candidate_ready(spec, stable.version):
            return context.restart_window(
                spec,
                now,
                step,
                f"{stable.name} was failed over ({moved:.0f} requests): its server was down or "
                "reloading, so the candidate's traffic in that window proves nothing",
            )
        return context.record_hold(spec, verdict, step)
    checked = context.readiness_verdict(spec, candidate.version, verdict)
    if checked is None:
        problems = context.replica_problems(spec, candidate.version)
        waiting = Verdict(
            None, [f"waiting for {candidate.name} on every replica: " + "; ".join(problems)], {}
        )
        return context.record_hold(spec, waiting, step)
    verdict = checked
    if verdict.passed is False:
        return context.write(
            spec,
            lambda current: operations.update_rollout(
                operations.rollback(current), last_verdict=verdict.to_json()
            ),
            f"rollback at {step}",
            "; ".join(verdict.reasons),
            verdict.to_json(),
        )
    if verdict.passed is None:
        if any(reason.startswith("holding:") for reason in verdict.reasons):
            return context.record_hold(spec, verdict, step)  # say why, once: it can last a while
        return None
    if rollout.step + 1 == len(rollout.steps):
        decision = context.write(
            spec,
            lambda current: operations.update_rollout(
                operations.promote(current, candidate.name), last_verdict=verdict.to_json()
            ),
            f"promote {candidate.name} after {step}",
            "; ".join(verdict.reasons),
            verdict.to_json(),
            champion=candidate.version,
        )
        context.lease.release(spec.model)
        return decision
    weight = rollout.steps[rollout.step + 1]
    return context.write(
        spec,
        lambda current: operations.update_rollout(
            operations.set_weights(current, {stable.name: 100.0 - weight, candidate.name: weight}),
            baseline=counters_json(now),
            step_started_at=datetime.now(UTC),
            step=rollout.step + 1,
            last_verdict=verdict.to_json(),
        ),
        f"step {rollout.step + 2} of {len(rollout.steps)}: {weight:g}% to {candidate.name}",
        f"{step} passed: " + "; ".join(verdict.reasons),
        verdict.to_json(),
    )
