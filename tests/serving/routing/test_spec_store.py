"""Routing specs in the store: compare-and-swap, append-only history, validation, concurrent writers."""

from __future__ import annotations

import threading

import pytest

from model_store import ModelStore
from serving.routing import operations
from serving.routing.spec import RoutingSpec, SpecError
from serving.routing.spec_store import SpecNotFoundError, SpecStore, StaleRevisionError


def first_deploy(store: SpecStore) -> RoutingSpec:
    return store.update(
        "m",
        lambda current: operations.deploy(current, "m", 1, "triton", "single"),
        actor="alice",
        action="deploy",
        reason="first",
    )


def test_revisions_history_and_listing(store: ModelStore) -> None:
    specs = SpecStore(store.storage)
    assert specs.models() == [] and specs.find("m") is None
    with pytest.raises(SpecNotFoundError, match="deploy a version first"):
        specs.get("m")
    created = first_deploy(specs)
    assert created.revision == 1 and [v.name for v in created.variants] == ["triton-v1"]
    canary = specs.update(
        "m",
        lambda current: operations.deploy(current, "m", 2, "tfserving", "canary", weight=20),
        actor="bob",
        action="deploy",
        reason="canary",
        metrics={"rmse": 0.1},
        expected_revision=1,
    )
    assert canary.revision == 2
    assert [(h.revision, h.actor, h.reason) for h in canary.history] == [
        (1, "alice", "first"),
        (2, "bob", "canary"),
    ]
    assert canary.history[1].metrics == {"rmse": 0.1}
    assert specs.get("m") == canary and specs.models() == ["m"]
    spec, etag = specs.read("m")
    assert etag == specs.etag("m") and spec.revision == 2


def test_stale_writers_get_stale_revision_and_nothing_changes(store: ModelStore) -> None:
    specs = SpecStore(store.storage)
    first_deploy(specs)
    with pytest.raises(StaleRevisionError, match="revision 1, not 0"):
        specs.update(
            "m", lambda current: operations.rollback(current), actor="x", action="x", expected_revision=0
        )
    assert specs.get("m").revision == 1


def test_writers_cannot_rewrite_history_or_write_unservable_specs(store: ModelStore) -> None:
    specs = SpecStore(store.storage)
    first_deploy(specs)

    def forge(current: RoutingSpec | None) -> RoutingSpec:
        assert current is not None
        return current.model_copy(update={"history": []})

    assert len(specs.update("m", forge, actor="mallory", action="forge").history) == 2
    with pytest.raises(SpecError, match=r"params\.active"):
        specs.update(
            "m",
            lambda current: RoutingSpec.model_validate(
                {
                    "model": "m",
                    "strategy": "blue_green",
                    "variants": [{"name": "a", "version": 1, "backend": "triton"}],
                }
            ),
            actor="x",
            action="x",
        )
    with pytest.raises(ValueError, match="less than or equal to 100"):
        specs.update(
            "m", lambda current: operations.set_weights(current, {"triton-v1": 500}), actor="x", action="x"
        )
    with pytest.raises(SpecError, match="not 'm'"):
        specs.update(
            "m", lambda current: RoutingSpec(model="other", variants=current.variants), actor="x", action="x"
        )  # type: ignore[union-attr]
    assert specs.get("m").revision == 2


def test_concurrent_writers_lose_no_update(store: ModelStore) -> None:
    specs = SpecStore(store.storage)
    first_deploy(specs)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for step in range(3):
                specs.update(
                    "m",
                    lambda current: current.model_copy(
                        update={"retry_unavailable": not current.retry_unavailable}
                    ),  # type: ignore[union-attr]
                    actor=f"writer-{index}",
                    action=f"toggle {step}",
                )
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final = specs.get("m")
    assert final.revision == 13 and [h.revision for h in final.history] == list(range(1, 14))
