from __future__ import annotations

from serving.routing.spec import RoutingSpec, SpecError
from serving.routing.strategies.base import Route, RouteRequest, RoutingStrategy


class SingleStrategy(RoutingStrategy):
    """All traffic to one variant: the only one, or the one with the highest weight."""

    name = "single"

    def __init__(self, spec: RoutingSpec) -> None:
        super().__init__(spec)
        if len(spec.routable()) != 1:
            raise SpecError(
                f"{spec.model}: strategy 'single' serves exactly one variant; "
                f"{len(spec.routable())} have weight above 0"
            )
        self._route = Route(spec.routable()[0])

    def route(self, request: RouteRequest) -> Route:
        return self._route
