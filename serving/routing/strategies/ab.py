from __future__ import annotations

import hashlib

from serving.routing.spec import RoutingSpec
from serving.routing.strategies.base import Route, RouteRequest, RoutingStrategy, WeightedPicker


def sticky_position(model: str, key: str) -> float:
    """A stable number in [0, 1) for (model, key): the same on every replica, run and machine."""
    digest = hashlib.blake2b(f"{model}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class ABStrategy(RoutingStrategy):
    """Sticky split: a hash of the ``params.sticky_header`` value picks the variant by weight.

    The hash depends only on the model name and the header value, so every gateway replica sends
    the same caller to the same variant with no shared state. Requests without the header fall
    back to their request id, which splits them by weight but is not sticky.
    """

    name = "ab"

    def __init__(self, spec: RoutingSpec) -> None:
        super().__init__(spec)
        self._header = spec.params.sticky_header.lower()
        self._picker = WeightedPicker(spec.variants, f"{spec.model}: strategy 'ab'")

    def route(self, request: RouteRequest) -> Route:
        key = request.headers.get(self._header) or request.request_id
        return Route(self._picker.pick(sticky_position(self.spec.model, key)))
