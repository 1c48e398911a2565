from __future__ import annotations

import random
from dataclasses import dataclass

from serving.routing.spec import RoutingSpec
from serving.routing.strategies.base import Route, RouteRequest, RoutingStrategy


@dataclass
class ArmStats:
    successes: float = 0.0
    failures: float = 0.0
    pulls: int = 0


class BanditStrategy(RoutingStrategy):
    """Thompson sampling over the variants, learning from rewards posted to the feedback endpoint.

        Each variant is an arm with a Beta(prior_alpha + successes, prior_beta + failures) belief
        about its reward rate. Per request the gateway draws one sample per arm and routes to the
        highest draw, so traffic shifts toward the better arm while the worse one keeps being
        explored in proportion to the doubt left. A reward in [0, 1] adds ``reward`` successes and
        ``1 - reward`` failures. With the gateway's shared arms (``bandit/<model>.json`` in the store) the
    counts are every replica's; without them, this process's. Either way they survive spec reloads.
    """

    name = "bandit"

    def __init__(self, spec: RoutingSpec) -> None:
        super().__init__(spec)
        self.alpha, self.beta = spec.params.bandit_prior_alpha, spec.params.bandit_prior_beta
        self.arms = {variant.name: ArmStats() for variant in spec.variants}
        self._routes = {variant.name: Route(variant) for variant in spec.variants}

    def route(self, request: RouteRequest) -> Route:
        best = max(
            self.arms,
            key=lambda name: random.betavariate(
                self.alpha + self.arms[name].successes, self.beta + self.arms[name].failures
            ),
        )
        self.arms[best].pulls += 1
        return self._routes[best]

    def record_reward(self, variant: str, reward: float) -> None:
        arm = self.arms.get(variant)
        if arm is not None:
            bounded = min(max(reward, 0.0), 1.0)
            arm.successes += bounded
            arm.failures += 1.0 - bounded

    def load_shared(self, arms: dict[str, tuple[float, float]]) -> None:
        """The totals in the store (every replica's feedback) replace this process's counts."""
        for name, (successes, failures) in arms.items():
            arm = self.arms.get(name)
            if arm is not None:
                arm.successes, arm.failures = successes, failures

    def carry_over(self, previous: RoutingStrategy) -> None:
        if isinstance(previous, BanditStrategy):
            for name, stats in previous.arms.items():
                if name in self.arms:
                    self.arms[name] = stats

    def describe(self) -> dict[str, object]:
        return {
            name: {
                "pulls": stats.pulls,
                "mean_reward": (self.alpha + stats.successes)
                / (self.alpha + self.beta + stats.successes + stats.failures),
            }
            for name, stats in self.arms.items()
        }
