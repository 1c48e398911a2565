"""Routing strategies, one class per file; ``build_strategy`` picks the spec's.

Adding a strategy: write a :class:`RoutingStrategy` subclass in its own module and list it in
``STRATEGIES`` below.
"""

from __future__ import annotations

from serving.routing.spec import RoutingSpec
from serving.routing.strategies.ab import ABStrategy
from serving.routing.strategies.bandit import BanditStrategy
from serving.routing.strategies.base import Route, RouteRequest, RoutingStrategy
from serving.routing.strategies.blue_green import BlueGreenStrategy
from serving.routing.strategies.canary import CanaryStrategy
from serving.routing.strategies.shadow import ShadowStrategy
from serving.routing.strategies.single import SingleStrategy

STRATEGIES: dict[str, type[RoutingStrategy]] = {
    strategy.name: strategy
    for strategy in (
        SingleStrategy,
        BlueGreenStrategy,
        CanaryStrategy,
        ShadowStrategy,
        ABStrategy,
        BanditStrategy,
    )
}


def build_strategy(spec: RoutingSpec) -> RoutingStrategy:
    """The spec's strategy, validated against it (raises SpecError)."""
    return STRATEGIES[spec.strategy](spec)


__all__ = ["STRATEGIES", "Route", "RouteRequest", "RoutingStrategy", "build_strategy"]
