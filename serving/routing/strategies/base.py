"""The interface every routing strategy implements, and the helpers they share."""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from serving.routing.spec import RoutingSpec, SpecError, Variant


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a strategy may look at: the request id and the caller's headers (lower-case names)."""

    request_id: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: ``primary`` answers the caller; ``shadow`` gets a copy, if any."""

    primary: Variant
    shadow: Variant | None = None


class RoutingStrategy:
    """Picks a variant per request. Built once per spec revision; ``route`` must be cheap.

    Strategies are stateless except the bandit, whose reward counts ``carry_over`` keeps across
    spec reloads. A strategy validates its spec in ``__init__`` and raises :class:`SpecError`
    naming what is wrong, so a bad spec is refused before it is written.
    """

    name: ClassVar[str]

    def __init__(self, spec: RoutingSpec) -> None:
        self.spec = spec
        #: The ETag of the shared learned state last loaded (``load_shared``); None: none yet.
        self.shared_etag: str | None = None

    def route(self, request: RouteRequest) -> Route:
        raise NotImplementedError

    def fallbacks(self, failed: Variant) -> list[Variant]:
        """Other variants to retry on when ``failed``'s server is unreachable, best first."""
        others = [variant for variant in self.spec.variants if variant.name != failed.name]
        return sorted(others, key=lambda variant: variant.weight, reverse=True)

    def record_reward(self, variant: str, reward: float) -> None:
        """Feedback for a request ``variant`` served; only learning strategies use it."""

    def load_shared(self, arms: dict[str, tuple[float, float]]) -> None:
        """Take learned totals shared by every gateway replica (variant -> successes, failures)."""

    def carry_over(self, previous: RoutingStrategy) -> None:
        """Keep learned state from the strategy this one replaces on a spec reload."""

    def describe(self) -> dict[str, object]:
        """The strategy's view of the split, for ``flywheel status`` and the admin API."""
        return {variant.name: variant.weight for variant in self.spec.variants}


class WeightedPicker:
    """Maps a number in [0, 1) onto variants in proportion to their weights (spec order)."""

    def __init__(self, variants: Sequence[Variant], what: str) -> None:
        chosen = [variant for variant in variants if variant.weight > 0]
        if not chosen:
            raise SpecError(f"{what}: at least one variant needs a weight above 0")
        self.variants = chosen
        total = sum(variant.weight for variant in chosen)
        running, self.bounds = 0.0, []
        for variant in chosen:
            running += variant.weight / total
            self.bounds.append(running)

    def pick(self, position: float) -> Variant:
        index = bisect.bisect_right(self.bounds, position)
        return self.variants[min(index, len(self.variants) - 1)]

    def pick_random(self) -> Variant:
        return self.pick(random.random())
