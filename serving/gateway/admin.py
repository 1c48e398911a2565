"""The control plane's operations: deploy, promote, rollback, reweight, replace a spec.

Transport-free like the data plane. Each operation that changes traffic first makes sure the
servers can take it: a deploy *stages* the version in the store (``serving/agent/staging``), and
waits until the model agent of every replica of its server reports it loaded and warmed up; only
then does it write the spec by compare-and-swap, so no request routes to a version still loading.
It then reloads this gateway's routing table at once; other gateway replicas pick the change up
on their next poll. The gateway itself writes into no server's folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from model_store import ModelStore
from serving.agent import staging
from serving.backends.base import BackendError, BackendUnavailableError, ModelBackend
from serving.backends.replicas import ServerDirectory
from serving.gateway.routing_table import RoutingTable
from serving.rollout import promotion
from serving.routing import operations
from serving.routing.spec import RoutingSpec, SpecError
from serving.routing.spec_store import SpecNotFoundError, SpecStore
from serving.routing.strategies import STRATEGIES

log = logging.getLogger(__name__)


class VersionLoadFailedError(BackendError):
    """An agent could not load the version (a corrupt artifact, a server refusing it): nothing
    was routed to it. The message names each replica and its server's reason."""

    status = 502


class ReplicasNotReadyError(BackendUnavailableError):
    """The version did not become ready on every replica in time; nothing was routed to it."""


class AdminService:
    def __init__(
        self,
        spec_store: SpecStore,
        store: ModelStore,
        backends: Mapping[str, ModelBackend],
        table: RoutingTable,
        directory: ServerDirectory,
        ready_timeout_s: float = 300.0,
    ) -> None:
        self.spec_store = spec_store
        self.store = store
        self.backends = backends
        self.table = table
        self.directory = directory
        self.ready_timeout_s = ready_timeout_s

    @contextlib.asynccontextmanager
    async def staged(self, model: str, wanted: list[tuple[int, str]], actor: str) -> AsyncIterator[None]:
        """Stage every (version, backend), wait until every replica of each holds it ready, run the
        body (the spec write), then remove the stages, whatever happened.

        All stages are written first and waited for under one deadline, so an early one cannot
        expire while a later one loads. Each deploy has its own stage objects: a concurrent deploy
        of the same version finishing first removes only its own. Raises VersionLoadFailedError as
        soon as an agent reports a failed load, ReplicasNotReadyError after ``ready_timeout_s``.
        """
        storage = self.store.storage
        ttl_s = self.ready_timeout_s + 60  # a deploy that dies here pins the versions no longer
        keys = []
        try:
            for version, backend in wanted:
                keys.append(
                    await asyncio.to_thread(staging.stage, storage, model, version, backend, ttl_s, actor)
                )
            await self._wait_ready(model, wanted)
            yield
        finally:
            for key in keys:
                await asyncio.to_thread(storage.delete, key)

    async def _wait_ready(self, model: str, wanted: list[tuple[int, str]]) -> None:
        deadline = asyncio.get_running_loop().time() + self.ready_timeout_s
        while True:
            await self.directory.refresh()
            problems: list[str] = []
            for version, backend in wanted:
                problems += self.directory.readiness(backend, model, version)[1]
            if not problems:
                return
            failed = [problem for problem in problems if "could not load" in problem]
            if failed:
                raise VersionLoadFailedError("; ".join(failed))
            if asyncio.get_running_loop().time() > deadline:
                raise ReplicasNotReadyError(
                    f"{model} is not ready on every replica after {self.ready_timeout_s:g} s: "
                    + "; ".join(problems)
                )
            await asyncio.sleep(0.25)

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
        if bake_s is not None and strategy != "blue_green":
            raise SpecError("a bake time drives a blue-green rollout; use --strategy blue_green")
        if steps and strategy != "canary":
            raise SpecError("--steps drive a canary rollout; use --strategy canary")
        current = await asyncio.to_thread(self.spec_store.find, model)
        operations.refuse_during_rollout(current)
        async with self.staged(model, [(version, backend)], actor):
            return await self._deploy_staged(
                model, version, backend, strategy, weight, params, steps, interval_s, bake_s,
                expected_revision, actor, reason,
            )  # fmt: skip

    async def _deploy_staged(
        self,
        model: str,
        version: int,
        backend: str,
        strategy: str,
        weight: float | None,
        params: dict[str, Any] | None,
        steps: list[float] | None,
        interval_s: float | None,
        bake_s: float | None,
        expected_revision: int | None,
        actor: str,
        reason: str,
    ) -> RoutingSpec:
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
            if variant.backend not in self.backends:
                raise SpecError(f"variant {variant.name}: no {variant.backend} adapter is configured")
        async with self.staged(model, [(v.version, v.backend) for v in spec.variants], actor):
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
