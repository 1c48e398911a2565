"""The control plane's operations: deploy, promote, rollback, reweight, replace a spec.

Transport-free like the data plane. Each operation that changes traffic first makes sure the
servers can take it (a deploy loads the version on its server before any request may route
there), then writes the spec by compare-and-swap, then reloads this gateway's routing table at
once; other replicas pick the change up on their next poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from model_store import ModelStore
from model_store.manifest import Signature
from serving.backends.base import BackendError, BackendUnavailableError, ModelBackend
from serving.gateway.routing_table import RoutingTable
from serving.protocols.v2 import V2_TO_NUMPY
from serving.rollout import promotion
from serving.routing import operations
from serving.routing.spec import RoutingSpec, SpecError
from serving.routing.spec_store import SpecNotFoundError, SpecStore
from serving.routing.strategies import STRATEGIES

log = logging.getLogger(__name__)


async def wait_ready(server: ModelBackend, model: str, version: int, timeout_s: float = 60.0) -> None:
    """Until the server reports the version ready, loading it again if it vanished meanwhile.

    A load can return while the server still finishes it (a worker starting, or the tail of an
    unload of the same version that the server completes asynchronously); one immediate ready
    check would fail such a deploy for nothing.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await server.ready(model, version):
        if asyncio.get_running_loop().time() > deadline:
            raise BackendUnavailableError(
                f"{server.kind} loaded {model} v{version} but it is not ready after {timeout_s:g} s"
            )
        if version not in await server.loaded_versions(model):
            await server.load(model, version)
        await asyncio.sleep(0.2)


class AdminService:
    def __init__(
        self,
        spec_store: SpecStore,
        store: ModelStore,
        backends: Mapping[str, ModelBackend],
        table: RoutingTable,
    ) -> None:
        self.spec_store = spec_store
        self.store = store
        self.backends = backends
        self.table = table

    async def _write(self, model: str, change: Any, **history: Any) -> RoutingSpec:
        spec = await asyncio.to_thread(self.spec_store.update, model, change, **history)
        await self.table.refresh(only=model)
        return spec

    async def deployments(self) -> list[dict[str, Any]]:
        models = await asyncio.to_thread(self.spec_store.models)
        specs = [await asyncio.to_thread(self.spec_store.get, model) for model in models]
        return [spec.model_dump(mode="json", exclude={"history"}) for spec in specs]

    async def get(self, model: str) -> RoutingSpec:
        return await asyncio.to_thread(self.spec_store.get, model)

    async def deploy(
        self,
        model: str,
        version: int,
        backend: str,
        strategy: str,
        *,
        weight: float | None = None,
        params: dict[str, Any] | None = None,
        steps: list[float] | None = None,
        interval_s: float | None = None,
        bake_s: float | None = None,
        expected_revision: int | None = None,
        actor: str = "admin-api",
        reason: str = "",
    ) -> RoutingSpec:
        if strategy not in STRATEGIES:
            raise SpecError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        server = self.backends.get(backend)
        if server is None:
            raise SpecError(f"unknown backend {backend!r}; choose from {', '.join(self.backends)}")
        await asyncio.to_thread(self.spec_store.check_revision, model, expected_revision)
        manifest = await asyncio.to_thread(self.store.get_manifest, model, version)
        if manifest.backends and backend not in manifest.backends:
            packaged = ", ".join(str(kind) for kind in manifest.backends)
            raise SpecError(
                f"{model} v{version} is not packaged for {backend}; it is packaged for {packaged}"
            )
        current = await asyncio.to_thread(self.spec_store.find, model)
        operations.refuse_during_rollout(current)
        await server.load(model, version)
        await wait_ready(server, model, version)
        await warm_up(server, model, version, manifest.signature)
        if bake_s is not None:
            if strategy != "blue_green":
                raise SpecError("a bake time drives a blue-green rollout; use --strategy blue_green")
            return await self._write(
                model,
                lambda current: operations.start_blue_green(current, model, version, backend, bake_s, params),
                actor=actor,
                action=f"rollout {backend}-v{version}: blue-green, bake {bake_s:g} s",
                reason=reason,
                expected_revision=expected_revision,
            )
        if steps:
            if strategy != "canary":
                raise SpecError("--steps drive a canary rollout; use --strategy canary")
            return await self._write(
                model,
                lambda current: operations.start_canary(
                    current, model, version, backend, steps, interval_s or 30.0, baseline={}, params=params
                ),
                actor=actor,
                action=f"rollout {backend}-v{version}: canary {'/'.join(f'{step:g}' for step in steps)} %",
                reason=reason,
                expected_revision=expected_revision,
            )
        return await self._write(
            model,
            lambda current: operations.deploy(current, model, version, backend, strategy, weight, params),
            actor=actor,
            action=f"deploy {backend}-v{version} ({strategy})",
            reason=reason,
            expected_revision=expected_revision,
        )

    async def promote(
        self,
        model: str,
        variant: str | None = None,
        *,
        expected_revision: int | None = None,
        actor: str = "admin-api",
        reason: str = "",
        metrics: dict[str, Any] | None = None,
    ) -> RoutingSpec:
        spec = await asyncio.to_thread(
            promotion.promote,
            self.spec_store,
            self.store,
            model,
            lambda current: operations.promote(self._existing(model, current), variant),
            actor=actor,
            action=f"promote {variant or 'candidate'}",
            reason=reason,
            metrics=metrics,
            expected_revision=expected_revision,
        )
        await self.table.refresh(only=model)
        return spec

    async def rollback(
        self,
        model: str,
        *,
        expected_revision: int | None = None,
        actor: str = "admin-api",
        reason: str = "",
        metrics: dict[str, Any] | None = None,
    ) -> RoutingSpec:
        return await self._write(
            model,
            lambda current: operations.rollback(self._existing(model, current)),
            actor=actor,
            action="rollback",
            reason=reason,
            metrics=metrics,
            expected_revision=expected_revision,
        )

    async def abort(
        self, model: str, *, expected_revision: int | None = None, actor: str = "admin-api", reason: str = ""
    ) -> RoutingSpec:
        """Stop the running rollout: all traffic back to the stable variant."""
        return await self._write(
            model,
            lambda current: operations.abort(self._existing(model, current)),
            actor=actor,
            action="abort rollout",
            reason=reason,
            expected_revision=expected_revision,
        )

    async def set_weights(
        self,
        model: str,
        weights: dict[str, float],
        *,
        expected_revision: int | None = None,
        actor: str = "admin-api",
        reason: str = "",
    ) -> RoutingSpec:
        return await self._write(
            model,
            lambda current: operations.set_weights(self._existing(model, current), weights),
            actor=actor,
            action=f"set weights {weights}",
            reason=reason,
            expected_revision=expected_revision,
        )

    async def replace(
        self, model: str, spec: RoutingSpec, *, expected_revision: int, actor: str, reason: str
    ) -> RoutingSpec:
        """Write a whole spec (strategy, params, variants); every variant must be loadable."""
        await asyncio.to_thread(self.spec_store.check_revision, model, expected_revision)
        for variant in spec.variants:
            await asyncio.to_thread(self.store.get_manifest, model, variant.version)
            server = self.backends.get(variant.backend)
            if server is None:
                raise SpecError(f"variant {variant.name}: no {variant.backend} adapter is configured")
            if not await server.ready(model, variant.version):
                await server.load(model, variant.version)
        return await self._write(
            model,
            lambda current: spec,
            actor=actor,
            action=f"replace spec ({spec.strategy})",
            reason=reason,
            expected_revision=expected_revision,
        )

    @staticmethod
    def _existing(model: str, current: RoutingSpec | None) -> RoutingSpec:
        if current is None:
            raise SpecNotFoundError(model)
        return current


#: Inferences a freshly loaded version answers before it gets traffic: first calls are slow
#: (lazy initialisation in the servers), and a canary's latency check must not judge them.
WARMUP_REQUESTS = 5


async def warm_up(server: ModelBackend, model: str, version: int, signature: Signature) -> None:
    """Send zero-valued inputs shaped by the signature (batch 1), best effort.

    Warm-up is about latency, not judgement: a failing answer is logged and the deploy goes on,
    because the canary's analysis (on real traffic) is what decides about errors.
    """
    inputs = {
        spec.name: np.zeros([1 if dim < 0 else dim for dim in spec.shape], dtype=V2_TO_NUMPY[spec.datatype])
        for spec in signature.inputs
        if spec.datatype in V2_TO_NUMPY
    }
    if len(inputs) != len(signature.inputs):
        return  # an input numpy cannot build (BYTES): no synthetic warm-up
    for attempt in range(WARMUP_REQUESTS):
        try:
            await server.infer(model, version, inputs)
        except BackendError as error:
            log.warning("warm-up request %d to %s v%d failed: %s", attempt + 1, model, version, error)
