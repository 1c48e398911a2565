"""What every rollout driver shares: the store, the metrics source, the lease, readiness on
every replica, reference profiles, and the one way to write a decision (CAS + history).

The drivers (``canary.py``, ``blue_green.py``) are siblings: each is a function of a context and
a spec, importing this module and never each other or the controller.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from model_store import ModelStore
from model_store.errors import ModelStoreError
from model_store.labels import joined_key, read_joined
from model_store.manifest import OutputKind
from serving.agent.report import read_reports, readiness
from serving.rollout import promotion
from serving.rollout.analysis import (
    DEFAULT_THRESHOLDS,
    MetricsSource,
    VariantCounters,
    Verdict,
    counters_json,
    reference_bins,
)
from serving.rollout.label_checks import LabelCounts, label_counts, quality_verdict
from serving.rollout.lease import Lease
from serving.routing import operations
from serving.routing.spec import RoutingSpec
from serving.routing.spec_store import SpecStore

log = logging.getLogger(__name__)
ACTOR = "rollout-controller"


def verdict_limit(spec: RoutingSpec, name: str) -> float:
    """A threshold of the spec's analysis, or its default."""
    return float({**DEFAULT_THRESHOLDS, **spec.params.analysis}[name])


class RolloutContext:
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
        self._calibrations: dict[tuple[str, int], dict[str, Any] | None] = {}
        self._joined: dict[str, tuple[str | None, Any]] = {}
        self._kinds: dict[tuple[str, int], OutputKind] = {}

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
        failed = [problem for problem in problems if "could not load" in problem]
        if failed:  # the agents' reasons first: they say why, the traffic numbers only what
            return Verdict(
                False, failed + (verdict.reasons if verdict.passed is False else []), verdict.metrics
            )
        if not problems or verdict.passed is False:
            return verdict
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
                self._calibrations[key] = profile.get("confidence")
        return self._references[key]

    def calibration(self, model: str, version: int) -> dict[str, Any] | None:
        """A classifier version's profile ``confidence`` entry: bins, frequencies and CBPE's
        calibration map (each bin's validation accuracy)."""
        self.reference(model, version)
        return self._calibrations.get((model, version))

    def label_evidence(
        self, spec: RoutingSpec, stable: Any, candidate: Any
    ) -> tuple[LabelCounts, LabelCounts] | None:
        """Joined labels of what the two variants served since the rollout began, or None while the
        join has nothing (re-read only when the join's ETag changes)."""
        rollout = spec.rollout
        if rollout is None:
            return None
        try:
            etag = self.store.storage.etag(joined_key(spec.model))
            cached_etag, table = self._joined.get(spec.model, (None, None))
            if etag is None:
                return None
            if etag != cached_etag:
                table = read_joined(self.store.storage, spec.model)
                self._joined[spec.model] = (etag, table)
            kind = self._kinds.get((spec.model, candidate.version))
            if kind is None:
                kind = self._kinds[(spec.model, candidate.version)] = self.store.get_manifest(
                    spec.model, candidate.version
                ).output.kind
        except (ModelStoreError, ValueError) as error:
            log.warning("%s: no joined labels this tick: %s", spec.model, error)
            return None
        counts = label_counts(
            table, {"stable": stable.version, "candidate": candidate.version}, rollout.started_at,
            kind is OutputKind.CLASSIFICATION,
        )  # fmt: skip
        return counts["stable"], counts["candidate"]

    def quality(
        self, spec: RoutingSpec, stable: Any, candidate: Any, window: dict[str, VariantCounters]
    ) -> Verdict | None:
        """What joined labels and CBPE say against the candidate (label_checks.py), or None."""
        return quality_verdict(
            window[stable.name],
            window[candidate.name],
            {**DEFAULT_THRESHOLDS, **spec.params.analysis},
            self.label_evidence(spec, stable, candidate),
            (self.calibration(spec.model, stable.version), self.calibration(spec.model, candidate.version)),
            (datetime.now(UTC) - spec.rollout.step_started_at).total_seconds() if spec.rollout else 0.0,
        )

    def failed_loads(self, spec: RoutingSpec, version: int) -> list[str]:
        """The agents' reasons a version could not be loaded on some replica (empty: none failed)."""
        return [problem for problem in self.replica_problems(spec, version) if "could not load" in problem]

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
