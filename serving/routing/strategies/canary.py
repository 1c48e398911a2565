from __future__ import annotations

from serving.routing.spec import RoutingSpec
from serving.routing.strategies.base import Route, RouteRequest, RoutingStrategy, WeightedPicker


class CanaryStrategy(RoutingStrategy):
    """Weighted random split: each request independently picks a variant by its ``weight``.

    Weights are relative (they need not add up to 100). The rollout controller, or a person
    through the admin API, moves the canary's weight through ``params.canary_steps``.
    """

    name = "canary"

    def __init__(self, spec: RoutingSpec) -> None:
        super().__init__(spec)
        self._picker = WeightedPicker(spec.variants, f"{spec.model}: strategy 'canary'")

    def route(self, request: RouteRequest) -> Route:
        return Route(self._picker.pick_random())
