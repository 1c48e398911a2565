"""The rollout controller: drives every running canary rollout through its steps.

Each tick, for each model whose spec has a running rollout and whose lease this controller
holds: read the gateway's counters, analyse the candidate against the stable variant over the
step's window, and act by a compare-and-swap write of the spec (next step, promote, or roll
back), recording the step, the metrics and the verdict in the spec's history. A lost CAS race
(a person promoted by hand meanwhile) just means re-reading next tick.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from model_store import ModelStore
from model_store.errors import ModelStoreError
from serving.agent.report import read_reports, readiness
from serving.rollout import blue_green, promotion
from serving.rollout.analysis import (
    DEFAULT_THRESHOLDS,
    MetricsSource,
    VariantCounters,
    Verdict,
    analyse,
    counters_json,
    reference_bins,
    stable_disrupted,
)
from serving.rollout.lease import Lease
from serving.routing import operations
from serving.routing.spec import RoutingSpec
from serving.routing.spec_store import SpecStore, StaleRevisionError

log = logging.getLogger(__name__)
ACTOR = "rollout-controller"


def verdict_limit(spec: RoutingSpec, name: str) -> float:
    """A threshold of the spec's analysis, or its default."""
    return float({**DEFAULT_THRESHOLDS, **spec.params.analysis}[name])


class RolloutController:
    def __init__(
        self,
        store: ModelStore,
        source: MetricsSource,
        gateway_url: str,
        holder: str,
        lease_ttl_s: float = 15.0,
        agent_stale_after_s: float = 15.0,
    ) -> None:
        self.agent_stale_after_s = agent_stale_after_s
        self.store = store
        self.spec_store = SpecStore(store.storage)
        self.source = source
        self.gateway_url = gateway_url.rstrip("/")
        self.lease = Lease(store.storage, holder, lease_ttl_s)
        self._references: dict[tuple[str, int], dict[str, float] | None] = {}

    def tick(self) -> list[dict[str, Any]]:
        """One pass over every running rollout; returns what was decided (for logs and tests)."""
        decisions = []
        for model in self.spec_store.models():
            # A promote that crashed between the spec and the alias is finished here, whoever
            # started it (admin API, a driver, an earlier life of this controller).
            try:
                crowned = promotion.finish_promotion(self.spec_store, self.store, model, actor=ACTOR)
            except StaleRevisionError:
                crowned = None  # changed meanwhile: the next tick looks again
            except Exception as error:  # one model's store trouble must not stop every rollout
                log.exception("%s: finishing its promotion failed, retrying next tick: %s", model, error)
                crowned = None
            if crowned is not None:
                decisions.append(
                    {"model": model, "action": f"champion -> v{crowned}", "reason": "reconciled"}
                )
            spec = self.spec_store.find(model)
            if spec is None or spec.rollout is None or not spec.rollout.running:
                continue
            if not self.lease.acquire(model):
                continue
            try:
                decision = self.drive(spec)
            except StaleRevisionError:
                continue  # someone changed the spec meanwhile: decide again on the new one
            except httpx.HTTPError as error:
                log.warning("%s: gateway metrics unavailable, holding the step: %s", model, error)
                continue
            if decision:
                decisions.append(decision)
                log.info("%s: %s", model, decision)
        return decisions

    def replica_problems(self, spec: RoutingSpec, version: int) -> list[str]:
        """Why ``version`` is not ready on every replica of its server (empty: it is).

        Read from the model agents' reports in the store, not from one gateway: traffic shifts
        only when every replica holds the version, whichever gateway replica routes it.
        """
        variant = next((v for v in spec.variants if v.version == version), None)
        if variant is None:
            return [f"v{version} is not in {spec.model}'s spec"]
        reports = read_reports(self.store.storage, self.agent_stale_after_s, variant.backend)
        return readiness(reports, variant.backend, spec.model, version)[1]

    def candidate_ready(self, spec: RoutingSpec, version: int) -> bool:
        return not self.replica_problems(spec, version)

    def readiness_verdict(self, spec: RoutingSpec, version: int, verdict: Verdict) -> Verdict | None:
        """``verdict`` unless the version is missing on a replica: a failed load fails the step
        (the agents' reasons go into history); a replica still loading holds it (None)."""
        problems = self.replica_problems(spec, version)
        if not problems or verdict.passed is False:
            return verdict
        failed = [problem for problem in problems if "could not load" in problem]
        if failed:
            return Verdict(False, failed, verdict.metrics)
        return None

    def reference(self, model: str, version: int) -> dict[str, float] | None:
        """The version's reference prediction frequencies from its profile.json (cached), or None."""
        key = (model, version)
        if key not in self._references:
            try:
                profile = json.loads(self.store.read_artifact(model, version, "profile.json"))
            except KeyError:
                self._references[key] = None  # an imported model has no profile
            except (ModelStoreError, ValueError) as error:
                log.warning("%s v%s: no reference profile this tick: %s", model, version, error)
                return None  # a store hiccup or a bad copy: try again next tick
            else:
                self._references[key] = reference_bins(profile)
        return self._references[key]

    def drive(self, spec: RoutingSpec) -> dict[str, Any] | None:
        rollout = spec.rollout
        assert rollout is not None
        if rollout.kind == "blue_green":
            return blue_green.drive(self, spec)
        stable, candidate = spec.variant(rollout.stable), spec.variant(rollout.candidate)
        now = self.source.snapshot(
            spec.model, {stable.name: stable.version, candidate.name: candidate.version}
        )
        if not rollout.baseline:
            return self.write(
                spec,
                lambda current: operations.update_rollout(
                    current, baseline=counters_json(now), step_started_at=datetime.now(UTC)
                ),
                f"step 1 of {len(rollout.steps)}: {rollout.weight:g}% to {candidate.name}",
                "baseline taken; baking",
                {},
            )
        step = f"step {rollout.step + 1} of {len(rollout.steps)} ({rollout.weight:g}%)"
        baseline = {name: VariantCounters.from_json(rollout.baseline.get(name, {})) for name in now}
        reset = next((why for name in now if (why := now[name].reset_since(baseline[name]))), None)
        if reset is not None:
            # A step never passes or fails on a negative or partial window: start it again.
            return self.restart_window(spec, now, step, f"counters restarted: {reset}")
        window = {name: counters.minus(baseline[name]) for name, counters in now.items()}
        baked = (datetime.now(UTC) - rollout.step_started_at).total_seconds() >= rollout.interval_s
        verdict = analyse(
            window[stable.name],
            window[candidate.name],
            spec.params.analysis,
            baked,
            stable_has_traffic=rollout.weight < 100,
            candidate_reference=self.reference(spec.model, candidate.version),
        )
        moved = window[stable.name].failovers + window[stable.name].skipped
        if (
            verdict.passed is None
            and rollout.weight < 100
            and stable_disrupted(window[stable.name], verdict_limit(spec, "max_error_rate"))
        ):
            if self.candidate_ready(spec, stable.version):
                return self.restart_window(
                    spec,
                    now,
                    step,
                    f"{stable.name} was failed over ({moved:.0f} requests): its server was down or "
                    "reloading, so the candidate's traffic in that window proves nothing",
                )
            return self.record_hold(spec, verdict, step)
        checked = self.readiness_verdict(spec, candidate.version, verdict)
        if checked is None:
            problems = self.replica_problems(spec, candidate.version)
            waiting = Verdict(
                None, [f"waiting for {candidate.name} on every replica: " + "; ".join(problems)], {}
            )
            return self.record_hold(spec, waiting, step)
        verdict = checked
        if verdict.passed is False:
            return self.write(
                spec,
                lambda current: operations.update_rollout(
                    operations.rollback(current), last_verdict=verdict.to_json()
                ),
                f"rollback at {step}",
                "; ".join(verdict.reasons),
                verdict.to_json(),
            )
        if verdict.passed is None:
            return None
        if rollout.step + 1 == len(rollout.steps):
            decision = self.write(
                spec,
                lambda current: operations.update_rollout(
                    operations.promote(current, candidate.name), last_verdict=verdict.to_json()
                ),
                f"promote {candidate.name} after {step}",
                "; ".join(verdict.reasons),
                verdict.to_json(),
                champion=candidate.version,
            )
            self.lease.release(spec.model)
            return decision
        weight = rollout.steps[rollout.step + 1]
        return self.write(
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

    def restart_window(
        self, spec: RoutingSpec, now: dict[str, VariantCounters], step: str, reason: str
    ) -> dict[str, Any]:
        """A fresh baseline and bake timer for the current step, recorded in history."""
        return self.write(
            spec,
            lambda current: operations.update_rollout(
                current, baseline=counters_json(now), step_started_at=datetime.now(UTC)
            ),
            f"{step}: window restarted",
            reason,
            {},
        )

    def record_hold(self, spec: RoutingSpec, verdict: Verdict, step: str) -> dict[str, Any] | None:
        """Say once, in the rollout status and the history, why the step is holding."""
        assert spec.rollout is not None
        if spec.rollout.last_verdict and spec.rollout.last_verdict.get("reasons") == verdict.reasons:
            return None
        return self.write(
            spec,
            lambda current: operations.update_rollout(current, last_verdict=verdict.to_json()),
            f"{step}: holding",
            "; ".join(verdict.reasons),
            verdict.to_json(),
        )

    def write(
        self,
        spec: RoutingSpec,
        change: Any,
        action: str,
        reason: str,
        metrics: dict[str, Any],
        champion: int | None = None,
    ) -> dict[str, Any]:
        """One CAS write of the spec at the revision decided on; with ``champion``, the crash-safe
        promote (serving.rollout.promotion) that also makes that version the champion."""
        history: dict[str, Any] = {"actor": ACTOR, "action": action, "reason": reason, "metrics": metrics}
        if champion is None:
            written = self.spec_store.update(spec.model, change, expected_revision=spec.revision, **history)
        else:
            written = promotion.promote(
                self.spec_store, self.store, spec.model, change, champion,
                expected_revision=spec.revision, **history,
            )  # fmt: skip
        return {"model": spec.model, "revision": written.revision, "action": action, "reason": reason}

    def run(self, tick_s: float, heartbeat: Any = None) -> None:
        while True:
            try:
                self.tick()
            except Exception as error:  # a store hiccup: log it and keep going; never crash-loop
                log.exception("rollout tick failed: %s", error)
            if heartbeat is not None:
                heartbeat()
            time.sleep(tick_s)
