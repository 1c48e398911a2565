"""The rollout controller: drives every running rollout through its steps.

Each tick, for each model whose spec has a running rollout and whose lease this controller
holds, the rollout's driver (``canary.py`` or ``blue_green.py``, siblings over one
:class:`~serving.rollout.context.RolloutContext`) reads the counters, analyses the candidate
against the stable variant over the step's window, and acts by a compare-and-swap write of the
spec (next step, promote, or roll back), recording the step, the metrics and the verdict in the
spec's history. A lost CAS race (a person promoted by hand meanwhile) just means re-reading next
tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from serving.rollout import blue_green, canary, promotion
from serving.rollout.context import ACTOR, RolloutContext
from serving.routing.spec import RoutingSpec
from serving.routing.spec_store import StaleRevisionError

log = logging.getLogger(__name__)

#: One driver per rollout kind; a new kind is a sibling module and one line here.
DRIVERS: dict[str, Callable[[RolloutContext, RoutingSpec], dict[str, Any] | None]] = {
    "canary": canary.drive,
    "blue_green": blue_green.drive,
}


class RolloutController(RolloutContext):
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

    def drive(self, spec: RoutingSpec) -> dict[str, Any] | None:
        assert spec.rollout is not None
        return DRIVERS[spec.rollout.kind](self, spec)

    def run(self, tick_s: float, heartbeat: Any = None) -> None:
        while True:
            try:
                self.tick()
            except Exception as error:  # a store hiccup: log it and keep going; never crash-loop
                log.exception("rollout tick failed: %s", error)
            if heartbeat is not None:
                heartbeat()
            time.sleep(tick_s)
