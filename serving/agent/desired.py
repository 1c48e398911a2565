"""Which versions a server kind must hold: a pure function of the specs and the staged deploys."""

from __future__ import annotations

from collections.abc import Iterable

from serving.agent.staging import StagedVersion
from serving.routing.spec import RoutingSpec


def needed_versions(
    specs: Iterable[RoutingSpec], staged: Iterable[StagedVersion], kind: str
) -> dict[tuple[str, int], str]:
    """(model, version) -> why: a live variant on this kind, the stable of a running rollout (so a
    rollback is instant), or a deploy staged for it and waiting for the agents."""
    needed: dict[tuple[str, int], str] = {}
    for spec in specs:
        for variant in spec.variants:
            if variant.backend == kind:
                needed[(spec.model, variant.version)] = "live"
        rollout = spec.rollout
        if rollout is not None and rollout.running and rollout.stable in spec.names():
            stable = spec.variant(rollout.stable)
            if stable.backend == kind:
                needed.setdefault((spec.model, stable.version), "stable")
    for stage in staged:
        if stage.backend == kind:
            needed.setdefault((stage.model, stage.version), "staged")
    return needed
