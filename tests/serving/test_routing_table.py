"""The gateway's routing table on a real store: one unreadable spec never blocks the others."""

from __future__ import annotations

import asyncio
from pathlib import Path

from model_store import ModelStore
from serving.gateway.routing_table import RoutingTable
from serving.routing import operations
from serving.routing.spec_store import SpecStore
from tests.model_store.test_store import publish


def test_a_corrupt_spec_keeps_its_last_good_version_and_blocks_nothing(
    store: ModelStore, tmp_path: Path
) -> None:
    publish(store, tmp_path / "good", "good")
    publish(store, tmp_path / "broken", "broken")
    specs = SpecStore(store.storage)
    for model in ("broken", "good"):
        specs.update(
            model,
            lambda current, m=model: operations.deploy(current, m, 1, "triton", "single"),
            actor="t",
            action="deploy",
        )
    table = RoutingTable(specs, store, backends={}, reconcile=False)

    async def scenario() -> tuple[list[str], list[str]]:
        first = await table.refresh()
        store.storage.put("deployments/broken.json", b"{not json")
        store.storage.put("deployments/bad name.json", b"{}")  # not a valid model name: skipped
        specs.update("good", lambda current: operations.set_weights(current, {}), actor="t", action="touch")
        second = await table.refresh()
        return first, second

    first, second = asyncio.run(scenario())
    assert sorted(first) == ["broken", "good"]
    assert second == ["good"], "the good model reloads although 'broken' sorts before it"
    assert table.models["broken"].spec.revision == 1, "the last good spec keeps serving"
    assert "broken" in table.spec_errors and "error" in table.describe()["broken"]
    assert table.models["good"].spec.revision == 2


def test_a_model_another_replica_just_deployed_is_looked_up_not_404(
    store: ModelStore, tmp_path: Path
) -> None:
    publish(store, tmp_path / "fresh", "fresh")
    specs = SpecStore(store.storage)
    table = RoutingTable(specs, store, backends={}, reconcile=False)

    async def scenario() -> None:
        table.loaded_once.set()
        await table.refresh()  # nothing deployed yet: this replica's table is empty
        specs.update(  # another replica deploys it
            "fresh",
            lambda current: operations.deploy(current, "fresh", 1, "triton", "single"),
            actor="t",
            action="deploy",
        )
        await table.lookup_missing("fresh")
        for bogus in ("../etc", "never-deployed"):  # invalid or absent: no error recorded, no entry
            await table.lookup_missing(bogus)

    asyncio.run(scenario())
    assert table.get("fresh") is not None and table.get("fresh").spec.revision == 1  # type: ignore[union-attr]
    assert table.spec_errors == {} and sorted(table.models) == ["fresh"]
