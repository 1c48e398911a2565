"""Deploy, promote, rollback and reweight as spec-to-spec functions."""

from __future__ import annotations

import pytest

from serving.routing import operations
from serving.routing.spec import RoutingSpec, SpecError


def weights(spec: RoutingSpec) -> dict[str, float]:
    return {variant.name: variant.weight for variant in spec.variants}


def base() -> RoutingSpec:
    return operations.deploy(None, "m", 1, "torchserve", "canary")


def test_first_deploy_takes_all_traffic() -> None:
    assert weights(base()) == {"torchserve-v1": 100.0}
    assert operations.deploy(None, "m", 1, "triton", "blue_green").params.active == "triton-v1"


def test_canary_then_promote_or_rollback() -> None:
    canary = operations.deploy(base(), "m", 2, "tfserving", "canary", weight=25)
    assert weights(canary) == {"torchserve-v1": 75.0, "tfserving-v2": 25.0}
    assert operations.candidate_variant(canary).name == "tfserving-v2"
    promoted = operations.promote(canary)
    assert promoted.strategy == "single" and weights(promoted) == {"tfserving-v2": 100.0}
    rolled = operations.rollback(canary)
    assert rolled.strategy == "single" and weights(rolled) == {"torchserve-v1": 100.0}
    with pytest.raises(SpecError, match="nothing to roll back"):
        operations.rollback(rolled)
    with pytest.raises(SpecError, match="already serves all traffic"):
        operations.deploy(base(), "m", 1, "torchserve", "canary")


def test_blue_green_promote_flips_and_rollback_flips_back() -> None:
    staged = operations.deploy(base(), "m", 2, "triton", "blue_green")
    assert staged.params.active == "torchserve-v1" and weights(staged)["triton-v2"] == 0
    flipped = operations.promote(staged)
    assert flipped.params.active == "triton-v2" and len(flipped.variants) == 2
    assert operations.rollback(flipped).params.active == "torchserve-v1"


def test_shadow_ab_and_bandit_deploys() -> None:
    shadow = operations.deploy(base(), "m", 2, "triton", "shadow", params={"shadow_sample_rate": 0.5})
    assert shadow.params.primary == "torchserve-v1" and shadow.params.shadow_sample_rate == 0.5
    assert weights(operations.deploy(base(), "m", 2, "triton", "ab")) == {
        "torchserve-v1": 50.0,
        "triton-v2": 50.0,
    }
    two = operations.deploy(base(), "m", 2, "triton", "bandit")
    three = operations.deploy(two, "m", 3, "tfserving", "bandit")
    assert len(three.variants) == 3
    assert operations.promote(three, "triton-v2").variants[0].name == "triton-v2"


def test_set_weights_names_unknown_variants() -> None:
    with pytest.raises(SpecError, match="no variants named"):
        operations.set_weights(base(), {"nope": 1})


def test_a_heavier_canary_is_still_the_candidate() -> None:
    canary = operations.deploy(base(), "m", 2, "triton", "canary")
    shifted = operations.set_weights(canary, {"torchserve-v1": 20, "triton-v2": 80})
    assert operations.stable_variant(shifted).name == "torchserve-v1"
    assert weights(operations.promote(shifted)) == {"triton-v2": 100.0}
    assert weights(operations.rollback(shifted)) == {"torchserve-v1": 100.0}


def test_a_first_shadow_deploy_starts_single_and_single_keeps_retry_setting() -> None:
    first = operations.deploy(None, "m", 1, "triton", "shadow")
    assert first.strategy == "single"
    strict = base().model_copy(update={"retry_unavailable": False})
    assert operations.deploy(strict, "m", 2, "triton", "single").retry_unavailable is False


def test_a_rollout_refuses_other_deploys_until_it_ends() -> None:
    started = operations.start_canary(base(), "m", 2, "triton", [5, 50, 100], 10, baseline={})
    assert weights(started) == {"torchserve-v1": 95.0, "triton-v2": 5.0}
    assert started.rollout is not None and started.rollout.running
    with pytest.raises(operations.RolloutInProgressError, match="step 1 of 3"):
        operations.deploy(started, "m", 3, "triton", "canary")
    with pytest.raises(operations.RolloutInProgressError):
        operations.start_canary(started, "m", 3, "triton", [50, 100], 10, baseline={})
    aborted = operations.abort(started)
    assert aborted.rollout is not None and aborted.rollout.status == "aborted"
    assert weights(aborted) == {"torchserve-v1": 100.0}
    promoted = operations.promote(started)
    assert promoted.rollout is not None and promoted.rollout.status == "promoted"
    assert operations.deploy(promoted, "m", 3, "triton", "canary").variants[-1].name == "triton-v3"
    with pytest.raises(ValueError, match="end at 100"):
        operations.start_canary(base(), "m", 2, "triton", [5, 50], 10, baseline={})
