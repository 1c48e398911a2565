"""Promotion is one crash-safe operation: a crash between the spec and the alias converges."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store import ModelStore
from serving.rollout import promotion
from serving.rollout.analysis import VariantCounters
from serving.rollout.controller import RolloutController
from serving.routing import operations
from serving.routing.spec import RoutingSpec
from serving.routing.spec_store import SpecStore

MODEL = "promoted"


class Crash(Exception):
    """Stands for the process dying at a fault point."""


class NoMetrics:
    def snapshot(self, model: str, variants: dict[str, int]) -> dict[str, VariantCounters]:
        return {name: VariantCounters() for name in variants}


def _two_versions(store: ModelStore, tmp_path: Path) -> SpecStore:
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"w")
    for _ in range(2):
        store.publish(MODEL, {"weights.bin": artifact}, framework="pytorch")
    store.set_alias(MODEL, "champion", 1, actor="test", reason="first")
    spec_store = SpecStore(store.storage)
    spec_store.update(
        MODEL,
        lambda current: RoutingSpec.model_validate(
            {
                "model": MODEL,
                "strategy": "canary",
                "variants": [
                    {"name": "triton-v1", "version": 1, "backend": "triton", "weight": 90},
                    {"name": "triton-v2", "version": 2, "backend": "triton", "weight": 10},
                ],
            }
        ),
        actor="test",
        action="canary",
    )
    return spec_store


def _promote_candidate(
    spec_store: SpecStore, store: ModelStore, fault: promotion.FaultHook | None = None
) -> RoutingSpec:
    return promotion.promote(
        spec_store,
        store,
        MODEL,
        lambda current: operations.promote(current),  # type: ignore[arg-type]
        actor="admin-api",
        action="promote candidate",
        fault=fault,
    )


@pytest.mark.parametrize("point", ["between-spec-and-alias", "between-alias-and-clear"])
def test_a_promote_that_crashes_between_its_writes_converges_on_the_next_tick(
    store: ModelStore, tmp_path: Path, point: str
) -> None:
    spec_store = _two_versions(store, tmp_path)

    def crash_at(where: str) -> None:
        if where == point:
            raise Crash(where)

    with pytest.raises(Crash):
        _promote_candidate(spec_store, store, fault=crash_at)
    spec = spec_store.get(MODEL)
    assert [v.name for v in spec.variants] == ["triton-v2"] and spec.pending_champion == 2
    expected_alias = 1 if point == "between-spec-and-alias" else 2
    assert store.aliases(MODEL)["champion"] == expected_alias

    controller = RolloutController(store, NoMetrics(), "http://127.0.0.1:9", holder="controller-test")
    decisions = controller.tick()
    assert {"model": MODEL, "action": "champion -> v2", "reason": "reconciled"} in decisions
    assert store.aliases(MODEL)["champion"] == 2
    assert spec_store.get(MODEL).pending_champion is None
    # Converged: another tick changes nothing.
    revision = spec_store.get(MODEL).revision
    assert controller.tick() == [] and spec_store.get(MODEL).revision == revision


def test_a_promote_without_a_crash_moves_the_alias_and_leaves_no_record(
    store: ModelStore, tmp_path: Path
) -> None:
    spec_store = _two_versions(store, tmp_path)
    written = _promote_candidate(spec_store, store)
    assert written.pending_champion is None and store.aliases(MODEL)["champion"] == 2
    assert [entry.action for entry in written.history[-2:]] == ["promote candidate", "champion -> v2"]


def test_a_crashed_promotion_overtaken_by_a_later_deploy_leaves_the_alias_alone(
    store: ModelStore, tmp_path: Path
) -> None:
    spec_store = _two_versions(store, tmp_path)

    def crash(where: str) -> None:
        raise Crash(where)

    with pytest.raises(Crash):
        _promote_candidate(spec_store, store, fault=crash)
    # Before anything finished it, traffic went back to v1 by an edit that carries the record
    # along (as a blue-green switch back does).
    v1 = RoutingSpec.model_validate(
        {
            "model": MODEL,
            "variants": [{"name": "triton-v1", "version": 1, "backend": "triton", "weight": 100}],
        }
    ).variants
    spec_store.update(
        MODEL,
        lambda current: current.model_copy(update={"variants": v1}),  # type: ignore[union-attr]
        actor="ops",
        action="back to triton-v1",
    )
    assert spec_store.get(MODEL).pending_champion == 2
    controller = RolloutController(store, NoMetrics(), "http://127.0.0.1:9", holder="controller-test")
    controller.tick()
    spec = spec_store.get(MODEL)
    assert store.aliases(MODEL)["champion"] == 1, "v2 no longer serves: the old record must not crown it"
    assert spec.pending_champion is None
    assert spec.history[-1].action == "champion unchanged: v2 no longer serves"
