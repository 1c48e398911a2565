"""Each routing strategy on its own: splits, stickiness, sampling, learning, and the specs it refuses."""

from __future__ import annotations

import collections
import random
from typing import Any

import pytest

from serving.routing.spec import RoutingSpec, SpecError
from serving.routing.strategies import STRATEGIES, RouteRequest, build_strategy
from serving.routing.strategies.ab import sticky_position
from serving.routing.strategies.bandit import BanditStrategy


def spec(strategy: str, weights: tuple[float, ...] = (90, 10), **params: Any) -> RoutingSpec:
    return RoutingSpec.model_validate(
        {
            "model": "m",
            "strategy": strategy,
            "params": params,
            "variants": [
                {"name": f"v{index + 1}", "version": index + 1, "backend": "triton", "weight": weight}
                for index, weight in enumerate(weights)
            ],
        }
    )


def shares(strategy_spec: RoutingSpec, requests: int = 4000, **headers: str) -> collections.Counter[str]:
    strategy = build_strategy(strategy_spec)
    return collections.Counter(
        strategy.route(RouteRequest(f"r{index}", headers)).primary.name for index in range(requests)
    )


def test_every_strategy_is_registered() -> None:
    assert set(STRATEGIES) == {"single", "blue_green", "canary", "shadow", "ab", "bandit"}


def test_single_serves_its_one_variant_and_refuses_splits() -> None:
    assert shares(spec("single", (100,))) == {"v1": 4000}
    with pytest.raises(SpecError, match="exactly one"):
        build_strategy(spec("single", (50, 50)))


def test_canary_splits_by_relative_weight() -> None:
    random.seed(1)
    split = shares(spec("canary", (3, 1)))
    assert abs(split["v2"] / 4000 - 0.25) < 0.03
    assert shares(spec("canary", (100, 0))) == {"v1": 4000}
    with pytest.raises(SpecError, match="weight above 0"):
        build_strategy(spec("canary", (0, 0)))


def test_blue_green_sends_everything_to_the_active_colour() -> None:
    assert shares(spec("blue_green", (100, 0), active="v2")) == {"v2": 4000}
    with pytest.raises(SpecError, match=r"params\.active"):
        build_strategy(spec("blue_green", (100, 0)))
    with pytest.raises(SpecError, match="no variant named"):
        build_strategy(spec("blue_green", (100, 0), active="v9"))


def test_shadow_copies_a_sample_and_never_fails_over_to_the_shadow() -> None:
    random.seed(2)
    strategy = build_strategy(spec("shadow", (100, 0), primary="v1", shadow_sample_rate=0.25))
    routes = [strategy.route(RouteRequest(str(index))) for index in range(4000)]
    assert {route.primary.name for route in routes} == {"v1"}
    copied = sum(route.shadow is not None for route in routes)
    assert abs(copied / 4000 - 0.25) < 0.03
    assert strategy.fallbacks(routes[0].primary) == []
    with pytest.raises(SpecError, match="exactly two"):
        build_strategy(spec("shadow", (100,)))


def test_ab_is_a_pure_function_of_the_header() -> None:
    ab = spec("ab", (50, 50), sticky_header="X-User")
    first, second = build_strategy(ab), build_strategy(ab)  # two "replicas"
    for user in (f"user-{index}" for index in range(200)):
        chosen = {first.route(RouteRequest(f"{user}-{n}", {"x-user": user})).primary.name for n in range(3)}
        assert chosen == {second.route(RouteRequest("other", {"x-user": user})).primary.name}
        assert chosen == {"v1" if sticky_position("m", user) < 0.5 else "v2"}
    by_user = collections.Counter(
        first.route(RouteRequest("x", {"x-user": f"u{index}"})).primary.name for index in range(4000)
    )
    assert abs(by_user["v2"] / 4000 - 0.5) < 0.04
    # Without the header the request id decides: split by weight, not sticky.
    assert set(shares(ab)) == {"v1", "v2"}


def test_sticky_position_is_stable_across_runs() -> None:
    # Pinned values: a change here would move users between variants on upgrade.
    assert sticky_position("m", "alice") == pytest.approx(0.866997395, abs=1e-9)
    assert sticky_position("forecaster", "bob") == pytest.approx(0.808476709, abs=1e-9)
    assert sticky_position("m", "alice") != sticky_position("other-model", "alice")
    assert 0 <= sticky_position("m", "") < 1


def test_bandit_learns_the_better_arm_and_keeps_counts_across_reloads() -> None:
    random.seed(3)
    strategy = build_strategy(spec("bandit", (50, 50)))
    assert isinstance(strategy, BanditStrategy)
    for index in range(400):
        arm = strategy.route(RouteRequest(str(index))).primary.name
        strategy.record_reward(
            arm, 1.0 if (arm == "v2" and random.random() < 0.7) or random.random() < 0.3 else 0.0
        )
    later = collections.Counter(strategy.route(RouteRequest("x")).primary.name for _ in range(1000))
    assert later["v2"] > 700, later
    reloaded = build_strategy(spec("bandit", (50, 50)))
    reloaded.carry_over(strategy)
    assert reloaded.arms["v2"].successes == strategy.arms["v2"].successes > 0
    strategy.record_reward("no-such-arm", 1.0)  # ignored, not an error
