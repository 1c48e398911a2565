from __future__ import annotations

import random

from serving.routing.spec import RoutingSpec, SpecError, Variant
from serving.routing.strategies.base import Route, RouteRequest, RoutingStrategy


class ShadowStrategy(RoutingStrategy):
    """``params.primary`` answers every caller; a sampled copy goes to the other variant.

    The gateway sends the copy after the caller's answer is on its way, so the caller never
    waits for the shadow and never sees its errors. It records how far the two predictions are
    apart and the latency difference, per shadow variant.
    """

    name = "shadow"

    def __init__(self, spec: RoutingSpec) -> None:
        super().__init__(spec)
        if len(spec.variants) != 2:
            raise SpecError(
                f"{spec.model}: strategy 'shadow' needs exactly two variants (primary and shadow)"
            )
        primary_name = spec.params.primary or spec.variants[0].name
        primary = spec.variant(primary_name)
        shadow = next(variant for variant in spec.variants if variant.name != primary.name)
        self._sample_rate = spec.params.shadow_sample_rate
        self._plain, self._mirrored = Route(primary), Route(primary, shadow)

    def route(self, request: RouteRequest) -> Route:
        if self._sample_rate >= 1.0 or random.random() < self._sample_rate:
            return self._mirrored
        return self._plain

    def fallbacks(self, failed: Variant) -> list[Variant]:
        # The shadow is unproven: callers are never answered by it, not even on failover.
        return []

    def describe(self) -> dict[str, object]:
        shadow = self._mirrored.shadow
        assert shadow is not None
        return {
            self._plain.primary.name: 100.0,
            shadow.name: {"shadow_sample_percent": self._sample_rate * 100},
        }
