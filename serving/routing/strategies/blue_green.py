from __future__ import annotations

from serving.routing.spec import RoutingSpec, SpecError
from serving.routing.strategies.base import Route, RouteRequest, RoutingStrategy


class BlueGreenStrategy(RoutingStrategy):
    """Two colours live side by side; every request goes to ``params.active``.

    Switching colours is one spec write that changes ``active``. A gateway swaps its whole
    strategy object in one reference assignment, so each request sees either the old colour or
    the new one, never a mix, and the idle colour stays loaded for an instant switch back.
    """

    name = "blue_green"

    def __init__(self, spec: RoutingSpec) -> None:
        super().__init__(spec)
        if spec.params.active is None:
            raise SpecError(f"{spec.model}: strategy 'blue_green' needs params.active (a variant name)")
        self._route = Route(spec.variant(spec.params.active))

    def route(self, request: RouteRequest) -> Route:
        return self._route

    def describe(self) -> dict[str, object]:
        return {
            variant.name: 100.0 if variant.name == self._route.primary.name else 0.0
            for variant in self.spec.variants
        }
