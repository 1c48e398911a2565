"""Deploy, promote, rollback and reweight as pure functions from one spec to the next.

Convention: the first variant is the stable one and the last is the newest candidate. Each
function raises :class:`SpecError` when the change makes no sense, and never touches storage:
the admin API wraps them in :meth:`SpecStore.update` so every change is compare-and-swap.
"""

from __future__ import annotations

from typing import Any

from serving.routing.rollout_state import RolloutState
from serving.routing.spec import RoutingSpec, SpecError, StrategyParams, Variant


class RolloutInProgressError(Exception):
    """A model already rolling out refuses another rollout or deploy until it ends (HTTP 409)."""

    def __init__(self, spec: RoutingSpec) -> None:
        assert spec.rollout is not None
        rollout = spec.rollout
        super().__init__(
            f"{spec.model} is rolling {rollout.candidate} out (step {rollout.step + 1} of "
            f"{len(rollout.steps)}); wait for it to end, or promote, roll back or abort it"
        )


def refuse_during_rollout(current: RoutingSpec | None) -> None:
    if current is not None and current.rollout is not None and current.rollout.running:
        raise RolloutInProgressError(current)


def start_canary(
    current: RoutingSpec | None,
    model: str,
    version: int,
    backend: str,
    steps: list[float],
    interval_s: float,
    baseline: dict[str, Any],
    params: dict[str, Any] | None = None,
) -> RoutingSpec:
    """Deploy as a canary at the first step, with the rollout state the controller drives."""
    if current is None:
        raise SpecError(f"{model} has nothing deployed to roll out against; deploy a first version")
    refuse_during_rollout(current)
    spec = deploy(current, model, version, backend, "canary", weight=steps[0], params=params)
    rollout = RolloutState(
        stable=spec.variants[0].name,
        candidate=spec.variants[-1].name,
        steps=steps,
        interval_s=interval_s,
        baseline=baseline,
    )
    return spec.model_copy(update={"rollout": rollout})


def start_blue_green(
    current: RoutingSpec | None,
    model: str,
    version: int,
    backend: str,
    bake_s: float,
    params: dict[str, Any] | None = None,
) -> RoutingSpec:
    """Green beside blue with no traffic; the controller warms it up, switches, bakes."""
    if current is None:
        raise SpecError(f"{model} has nothing deployed to switch from; deploy a first version")
    refuse_during_rollout(current)
    spec = deploy(current, model, version, backend, "blue_green", params=params)
    rollout = RolloutState(
        kind="blue_green",
        stable=spec.params.active or spec.variants[0].name,
        candidate=spec.variants[-1].name,
        steps=[100.0],
        interval_s=bake_s,
        phase="warming",
    )
    return spec.model_copy(update={"rollout": rollout})


def keep_only(current: RoutingSpec, name: str) -> RoutingSpec:
    """All traffic to ``name`` alone (``single``); the other variants leave the spec."""
    return current.model_copy(
        update={
            "strategy": "single",
            "variants": [current.variant(name).model_copy(update={"weight": 100.0})],
        }
    )


def update_rollout(spec: RoutingSpec | None, **fields: Any) -> RoutingSpec:
    """A copy of ``spec`` with these rollout-state fields changed."""
    assert spec is not None and spec.rollout is not None
    return spec.model_copy(update={"rollout": spec.rollout.model_copy(update=fields)})


def _end_rollout(spec: RoutingSpec, status: str) -> RoutingSpec:
    if spec.rollout is None or not spec.rollout.running:
        return spec
    return update_rollout(spec, status=status)


def abort(current: RoutingSpec) -> RoutingSpec:
    """Stop a running rollout and send every request back to the stable variant."""
    if current.rollout is None or not current.rollout.running:
        raise SpecError(f"{current.model} has no rollout running")
    return update_rollout(rollback(current), status="aborted")


#: Default traffic share of a new variant, per strategy that splits by weight.
DEFAULT_CANDIDATE_WEIGHT = {"canary": 10.0, "ab": 50.0}


def stable_variant(spec: RoutingSpec) -> Variant:
    """The proven variant: blue-green's active colour, shadow's primary, else the first one.

    Not the heaviest: a canary moved to 80 % is still the candidate until it is promoted.
    """
    if spec.strategy == "blue_green" and spec.params.active:
        return spec.variant(spec.params.active)
    if spec.strategy == "shadow" and spec.params.primary:
        return spec.variant(spec.params.primary)
    return spec.variants[0]


def candidate_variant(spec: RoutingSpec) -> Variant:
    stable = stable_variant(spec)
    others = [variant for variant in spec.variants if variant.name != stable.name]
    if not others:
        raise SpecError(f"{spec.model}: only {stable.name} is deployed; there is no candidate")
    return others[-1]


def deploy(
    current: RoutingSpec | None,
    model: str,
    version: int,
    backend: str,
    strategy: str,
    weight: float | None = None,
    params: dict[str, Any] | None = None,
) -> RoutingSpec:
    """The spec after deploying ``version`` on ``backend`` with ``strategy``.

    - first deploy, or ``single``: the new variant takes all traffic (a direct cut-over);
    - ``canary`` / ``ab``: the stable variant keeps ``100 - weight``, the new one gets ``weight``;
    - ``blue_green``: the new variant is the idle colour; ``promote`` switches;
    - ``shadow``: the new variant receives copies; the stable one keeps answering;
    - ``bandit``: the new variant joins the arms.
    """
    refuse_during_rollout(current)
    candidate = Variant(name=Variant.default_name(backend, version), version=version, backend=backend)
    extra = StrategyParams.model_validate(
        {**(current.params.model_dump() if current else {}), **(params or {})}
    )
    if current is None or strategy == "single":
        candidate.weight = 100.0
        # A shadow needs something to shadow: a first deploy with it starts as `single`.
        first_strategy = "single" if strategy == "shadow" else strategy
        extra.active = candidate.name if first_strategy == "blue_green" else None
        return RoutingSpec(
            model=model,
            strategy=first_strategy,
            variants=[candidate],
            params=extra,
            retry_unavailable=current.retry_unavailable if current else True,
        )
    stable = stable_variant(current).model_copy()
    if stable.name == candidate.name:
        raise SpecError(f"{model}: {candidate.name} already serves all traffic; deploy a new version")
    if strategy in DEFAULT_CANDIDATE_WEIGHT:
        share = DEFAULT_CANDIDATE_WEIGHT[strategy] if weight is None else weight
        if not 0 <= share <= 100:
            raise SpecError(f"weight must be within 0..100, got {share}")
        stable.weight, candidate.weight = 100.0 - share, share
        variants = [stable, candidate]
    elif strategy == "blue_green":
        stable.weight, candidate.weight = 100.0, 0.0
        variants, extra.active = [stable, candidate], stable.name
    elif strategy == "shadow":
        stable.weight, candidate.weight = 100.0, 0.0
        variants, extra.primary = [stable, candidate], stable.name
    elif strategy == "bandit":
        arms = [variant for variant in current.variants if variant.name != candidate.name] + [candidate]
        for arm in arms:
            arm.weight = round(100.0 / len(arms), 3)
        variants = arms
    else:
        raise SpecError(f"unknown strategy {strategy!r}")
    return RoutingSpec(
        model=model,
        strategy=strategy,
        variants=variants,
        params=extra,
        retry_unavailable=current.retry_unavailable,
    )


def promote(current: RoutingSpec, variant_name: str | None = None) -> RoutingSpec:
    """The candidate (or ``variant_name``) takes all traffic.

    Blue-green flips ``active`` and keeps the old colour loaded and idle for an instant switch
    back. Every other strategy ends as ``single`` on the promoted variant.
    """
    winner = current.variant(variant_name) if variant_name else candidate_variant(current)
    current = _end_rollout(current, "promoted")
    if current.strategy == "blue_green":
        others = [
            variant.model_copy(update={"weight": 0.0})
            for variant in current.variants
            if variant.name != winner.name
        ]
        return current.model_copy(
            update={
                "variants": [winner.model_copy(update={"weight": 100.0}), *others],
                "params": current.params.model_copy(update={"active": winner.name}),
            }
        )
    return current.model_copy(
        update={"strategy": "single", "variants": [winner.model_copy(update={"weight": 100.0})]}
    )


def rollback(current: RoutingSpec) -> RoutingSpec:
    """Traffic returns to the stable variant and the candidate is dropped.

    For blue-green, "stable" is the idle colour: rollback right after a promote switches back.
    """
    current = _end_rollout(current, "rolled_back")
    if current.strategy == "blue_green":
        active = current.variant(current.params.active or current.variants[0].name)
        previous = [variant for variant in current.variants if variant.name != active.name]
        if not previous:
            raise SpecError(f"{current.model}: only {active.name} is deployed; nothing to roll back to")
        return promote(current, previous[0].name)
    stable = stable_variant(current)
    if len(current.variants) == 1:
        raise SpecError(f"{current.model}: only {stable.name} is deployed; nothing to roll back to")
    return current.model_copy(
        update={"strategy": "single", "variants": [stable.model_copy(update={"weight": 100.0})]}
    )


def set_weights(current: RoutingSpec, weights: dict[str, float]) -> RoutingSpec:
    """Manual weights by variant name; variants not named keep theirs."""
    unknown = set(weights) - set(current.names())
    if unknown:
        raise SpecError(f"{current.model}: no variants named {sorted(unknown)}; variants: {current.names()}")
    variants = [
        variant.model_copy(update={"weight": weights.get(variant.name, variant.weight)})
        for variant in current.variants
    ]
    return current.model_copy(update={"variants": variants})
