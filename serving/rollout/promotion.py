"""Promotion as one crash-safe operation: the routing spec, then the ``champion`` alias.

They live in two documents, so no single write can change both. The spec write that promotes a
version also records ``pending_champion``; moving the alias follows, and a last spec write
clears the record. A process that dies anywhere in between leaves the record in the spec, and
the rollout controller, which calls :func:`finish_promotion` for every model on every tick,
moves the alias then. The admin API, the canary driver and the blue-green driver all promote
through :func:`promote`, so there is one path to get right.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from model_store import ModelStore
from model_store.errors import AliasConflictError
from serving.routing.operations import stable_variant
from serving.routing.spec import RoutingSpec
from serving.routing.spec_store import SpecStore

log = logging.getLogger(__name__)

#: Test seam: called with a point's name between the steps; a test raises there to "crash".
FaultHook = Callable[[str], None]


def crowned(spec: RoutingSpec, version: int) -> RoutingSpec:
    """``spec`` carrying the promotion's record (part of the same write as the traffic change)."""
    return spec.model_copy(update={"pending_champion": version})


def promote(
    spec_store: SpecStore,
    store: ModelStore,
    model: str,
    change: Callable[[RoutingSpec | None], RoutingSpec],
    version: int | None = None,
    *,
    actor: str,
    action: str,
    reason: str = "",
    metrics: dict[str, Any] | None = None,
    expected_revision: int | None = None,
    fault: FaultHook | None = None,
) -> RoutingSpec:
    """Write ``change`` plus the promotion record by CAS, then make ``version`` the champion.

    ``version`` defaults to the variant that serves as stable once ``change`` is applied.
    """

    def change_and_crown(current: RoutingSpec | None) -> RoutingSpec:
        changed = change(current)
        return crowned(changed, version if version is not None else stable_variant(changed).version)

    written = spec_store.update(
        model,
        change_and_crown,
        actor=actor,
        action=action,
        reason=reason,
        metrics=metrics,
        expected_revision=expected_revision,
    )
    if fault is not None:
        fault("between-spec-and-alias")
    finish_promotion(spec_store, store, model, actor=actor, fault=fault)
    return spec_store.find(model) or written


class _NothingToClear(Exception):
    """The record changed meanwhile: no write."""


def finish_promotion(
    spec_store: SpecStore, store: ModelStore, model: str, *, actor: str, fault: FaultHook | None = None
) -> int | None:
    """Move ``champion`` to the spec's pending promotion, then clear it; the version, or None.

    Idempotent: run again after a crash at any point, it converges on the same state. A record
    whose version no longer serves as the spec's stable variant (rolled back or replaced since)
    is cleared without touching the alias. The alias moves by compare-and-swap on the value read
    here, so a slow finisher never overwrites a newer promotion's alias.
    """
    spec = spec_store.find(model)
    if spec is None or spec.pending_champion is None:
        return None
    version = spec.pending_champion
    superseded = stable_variant(spec).version != version
    current = store.aliases(model).get("champion")
    if not superseded and current != version:
        try:
            store.set_alias(
                model,
                "champion",
                version,
                expected=current,
                actor=actor,
                reason=f"promoted in routing spec r{spec.revision}",
            )
        except AliasConflictError:
            return None  # someone moved it meanwhile: look again next time
    if fault is not None:
        fault("between-alias-and-clear")

    def clear(latest: RoutingSpec | None) -> RoutingSpec:
        if latest is None or latest.pending_champion != version:
            raise _NothingToClear  # a newer promotion arrived meanwhile: it finishes on its own
        return latest.model_copy(update={"pending_champion": None})

    action = f"champion unchanged: v{version} no longer serves" if superseded else f"champion -> v{version}"
    try:
        spec_store.update(model, clear, actor=actor, action=action, reason="promotion finished")
    except _NothingToClear:
        return None
    return None if superseded else version
