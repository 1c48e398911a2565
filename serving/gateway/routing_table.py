"""What the gateway serves right now: one :class:`LiveModel` per routing spec, reloaded live.

A poll loop compares each spec's ETag with the one it was loaded at, and on a change builds a
complete new ``LiveModel`` (strategy, signatures, drift profiles) off to the side before swapping
it in with one dict assignment. Requests already routed keep the object they started with, so a
reload never drops or mixes a request. If the store is unreachable, the last good table keeps
serving and the error is logged.

Each pass also refreshes the server directory (the replicas the model agents report) and each
variant's readiness from it. The gateway loads nothing: the agent beside every server replica
pulls the versions the specs name (``serving/agent``), so a restarted server gets them back
without the gateway or anyone redeploying.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from model_store import ModelStore
from model_store.errors import ModelStoreError
from model_store.manifest import OutputSpec, Signature
from model_store.names import validate_name
from serving.backends.base import BackendError, ModelBackend
from serving.backends.replicas import ServerDirectory
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.sampling import ProfileBins
from serving.gateway.shared_feedback import SharedArms
from serving.routing.spec import RoutingSpec, Variant
from serving.routing.spec_store import SpecNotFoundError, SpecStore
from serving.routing.strategies import RoutingStrategy, build_strategy

log = logging.getLogger(__name__)
#: Store reads a second that requests for unknown models may cause (see lookup_missing).
_MISSES_PER_S = 5.0
#: Shortest and longest gap between reloads a "not loaded" answer may start (see request_reload).
_RELOAD_GAP_S = (0.5, 10.0)


@dataclass
class LiveModel:
    spec: RoutingSpec
    strategy: RoutingStrategy
    etag: str | None
    signatures: dict[int, Signature]
    profiles: dict[int, ProfileBins | None]
    ready: dict[str, bool] = field(default_factory=dict)
    #: How each version's output reads (regression value or class probabilities), from its manifest.
    outputs: dict[int, OutputSpec] = field(default_factory=dict)

    def pinned(self, version: int) -> Variant | None:
        """The variant serving ``version``; the heaviest one if several servers host it."""
        matching = [variant for variant in self.spec.variants if variant.version == version]
        return max(matching, key=lambda variant: variant.weight) if matching else None


class RoutingTable:
    def __init__(
        self,
        spec_store: SpecStore,
        store: ModelStore,
        backends: Mapping[str, ModelBackend],
        reconcile: bool = True,
        metrics: GatewayMetrics | None = None,
        directory: ServerDirectory | None = None,
        arms: SharedArms | None = None,
    ) -> None:
        self.directory = directory
        self.arms = arms
        self.spec_store = spec_store
        self.store = store
        self.backends = backends
        self.reconcile_enabled = reconcile
        self.metrics = metrics
        self.models: dict[str, LiveModel] = {}
        self.loaded_once = asyncio.Event()
        self.last_error: str | None = None
        self._signatures: dict[tuple[str, int], tuple[Signature, OutputSpec]] = {}
        self._profiles: dict[tuple[str, int], ProfileBins | None] = {}
        self._reconciling: set[asyncio.Task[None]] = set()
        self._reconcile_locks: dict[str, asyncio.Lock] = {}
        self._reload_requested: dict[str, float] = {}
        self._reload_gap: dict[str, float] = {}
        self._refresh_lock = asyncio.Lock()
        self._miss_tokens = _MISSES_PER_S
        self._miss_refilled = time.monotonic()
        #: Models whose stored spec could not be loaded, with the reason (shown by /admin/routing).
        self.spec_errors: dict[str, str] = {}

    def get(self, model: str) -> LiveModel | None:
        return self.models.get(model)

    async def lookup_missing(self, model: str) -> None:
        """A model this gateway does not know: read its spec now rather than answer 404.

        Another gateway replica may have just deployed it (the deploy refreshes only the replica
        that took it; the others would learn at their next poll). At most ``_MISSES_PER_S`` such
        reads a second, for valid names only, so made-up names cost no more than a 404.
        """
        if model in self.models or not self.loaded_once.is_set():
            return
        now = time.monotonic()
        self._miss_tokens = min(
            _MISSES_PER_S, self._miss_tokens + (now - self._miss_refilled) * _MISSES_PER_S
        )
        self._miss_refilled = now
        if self._miss_tokens < 1:
            return
        self._miss_tokens -= 1
        try:
            validate_name(model)
            exists = await asyncio.to_thread(self.spec_store.etag, model) is not None
        except (ModelStoreError, ValueError, OSError):
            return
        if exists:
            # The replicas first, as every poll does: a spec must never be routable here before
            # the agents' reports that made its deploy succeed.
            if self.directory is not None:
                await self.directory.refresh()
            await self.refresh(only=model)

    # Loading -----------------------------------------------------------------------------------
    def _signature(self, model: str, version: int) -> tuple[Signature, OutputSpec]:
        key = (model, version)
        if key not in self._signatures:
            manifest = self.store.get_manifest(model, version)
            self._signatures[key] = (manifest.signature, manifest.output)
        return self._signatures[key]

    def _profile(self, model: str, version: int) -> ProfileBins | None:
        key = (model, version)
        if key not in self._profiles:
            try:
                profile = orjson.loads(self.store.read_artifact(model, version, "profile.json"))
                self._profiles[key] = ProfileBins.from_profile(profile)
            except (ModelStoreError, KeyError, ValueError) as error:
                log.warning("no drift profile for %s v%s: %s", model, version, error)
                self._profiles[key] = None
        return self._profiles[key]

    def _build(self, model: str) -> LiveModel | None:
        """Blocking (store reads): run in a thread."""
        try:
            spec, etag = self.spec_store.read(model)
        except SpecNotFoundError:
            return None
        strategy = build_strategy(spec)
        versions = spec.versions()
        described = {version: self._signature(model, version) for version in versions}
        return LiveModel(
            spec,
            strategy,
            etag,
            {version: signature for version, (signature, _) in described.items()},
            {version: self._profile(model, version) for version in versions},
            outputs={version: output for version, (_, output) in described.items()},
        )

    async def refresh(self, only: str | None = None) -> list[str]:
        """Reload the specs whose ETag changed (or just ``only``); returns the models swapped.

        Serialised: the poll loop and the admin API's immediate refresh never interleave, so
        neither can install an older revision over a newer one or drop a just-deployed model.
        """
        async with self._refresh_lock:
            names = [only] if only else await asyncio.to_thread(self.spec_store.models)
            changed = []
            for name in names:
                try:
                    if await self._refresh_one(name):
                        changed.append(name)
                except (ModelStoreError, ValueError, OSError) as error:
                    # One unreadable spec must not stop the others: the last good one keeps serving.
                    log.error(
                        "routing spec of %r could not be loaded, keeping the last good one: %s", name, error
                    )
                    self.spec_errors[name] = str(error)
            if not only:
                for gone in set(self.models) - set(names):
                    self.models.pop(gone)
                    changed.append(gone)
                for gone in set(self.spec_errors) - set(names):  # deleted since: a true 404 now
                    self.spec_errors.pop(gone)
            return changed

    async def _refresh_one(self, name: str) -> bool:
        current = self.models.get(name)
        etag = await asyncio.to_thread(self.spec_store.etag, name)
        if current is not None and etag == current.etag:
            return False
        live = await asyncio.to_thread(self._build, name)
        if self.directory is not None:
            # The replicas' reports read AFTER the spec: a deploy writes its spec only once every
            # agent reported the version ready, so these reports already say so.
            await self.directory.refresh()
        self.spec_errors.pop(name, None)
        if live is None:
            return self.models.pop(name, None) is not None
        if current is not None:
            if live.spec.revision < current.spec.revision:
                return False  # never step back to an older revision
            live.strategy.carry_over(current.strategy)
            live.ready = {k: v for k, v in current.ready.items() if k in live.spec.names()}
        self.models[name] = live
        if self.metrics is not None:
            self.metrics.spec_revision.labels(name).set(live.spec.revision)
        if self.reconcile_enabled:
            self._spawn_reconcile(live)
        return True

    def _spawn_reconcile(self, live: LiveModel) -> None:
        task = asyncio.create_task(self.reconcile(live))
        self._reconciling.add(task)
        task.add_done_callback(self._reconciling.discard)

    def _lock(self, model: str) -> asyncio.Lock:
        return self._reconcile_locks.setdefault(model, asyncio.Lock())

    async def reconcile(self, live: LiveModel) -> None:
        """Record which variants are ready on at least one replica of their server."""
        model = live.spec.model
        async with self._lock(model):
            await self._reconcile(live)
        low, high = _RELOAD_GAP_S
        all_ready = all(live.ready.get(name, False) for name in live.spec.names())
        self._reload_gap[model] = low if all_ready else min(self._reload_gap.get(model, low) * 2, high)

    async def _reconcile(self, live: LiveModel) -> None:
        for variant in live.spec.variants:
            backend = self.backends.get(variant.backend)
            if backend is None:
                live.ready[variant.name] = False
                continue
            try:
                live.ready[variant.name] = await backend.ready(live.spec.model, variant.version)
            except (BackendError, ModelStoreError) as error:
                log.warning("cannot tell whether %s on %s is ready: %s", variant.name, variant.backend, error)
                live.ready[variant.name] = False

    async def load_shared_arms(self) -> None:
        """Each bandit's arm totals from the store, when they changed (other replicas' feedback)."""
        if self.arms is None:
            return
        for name, live in list(self.models.items()):
            if live.spec.strategy != "bandit":
                continue
            try:
                etag = await asyncio.to_thread(self.arms.etag, name)
                if etag is not None and live.strategy.shared_etag != etag:
                    arms, etag = await asyncio.to_thread(self.arms.read, name)
                    live.strategy.load_shared(arms)
                    live.strategy.shared_etag = etag
            except Exception as error:  # one bad arms object must not stop the others or readiness
                log.warning("bandit arms of %r unreadable, keeping the last ones: %s", name, error)

    def request_reload(self, model: str) -> bool:
        """Re-check ``model``'s readiness now, because a server answered that it lacks a version.

        Called from the request path when a restarted server comes back empty (its agent is
        reloading it). At most one check runs per model; the gap between checks starts at 0.5 s
        and doubles (to 10 s) while a variant stays unready. Returns whether a check was started.
        """
        live = self.models.get(model)
        now = time.monotonic()
        gap = self._reload_gap.get(model, _RELOAD_GAP_S[0])
        if (
            live is None
            or not self.reconcile_enabled
            or self._lock(model).locked()
            or now - self._reload_requested.get(model, -math.inf) < gap
        ):
            return False
        self._reload_requested[model] = now
        self._spawn_reconcile(live)
        return True

    async def wait_reconciled(self) -> None:
        while self._reconciling:
            await asyncio.gather(*list(self._reconciling), return_exceptions=True)

    async def run(self, interval_s: float, reconcile_every_s: float | None = None) -> None:
        """Poll forever; a failing store keeps the last good table serving.

        Every pass (or every ``reconcile_every_s``) reads the agents' reports and the live
        variants' readiness again: both come from memory and the store, not from the servers.
        """
        every = interval_s if reconcile_every_s is None else reconcile_every_s
        last_reconcile = -math.inf
        while True:
            try:
                if self.directory is not None:
                    await self.directory.refresh()
                await self.refresh()
                # Ready only once a whole pass succeeded: before that, "not deployed" would be a
                # guess, so requests get 503 with Retry-After instead of 404.
                self.loaded_once.set()
                await self.load_shared_arms()
                if self.reconcile_enabled and time.monotonic() - last_reconcile >= every:
                    last_reconcile = time.monotonic()
                    for live in list(self.models.values()):
                        if not self._lock(live.spec.model).locked():
                            self._spawn_reconcile(live)
                self.last_error = None
            except (ModelStoreError, OSError, ValueError) as error:
                if self.last_error != str(error):
                    log.error("routing specs could not be reloaded, serving the last good ones: %s", error)
                self.last_error = str(error)
            except Exception as error:  # a botocore error, say: keep serving, say why
                log.exception("routing reload failed: %s", error)
                self.last_error = repr(error)
            await asyncio.sleep(interval_s)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            name: {
                "revision": live.spec.revision,
                "strategy": live.spec.strategy,
                "split": live.strategy.describe(),
                "ready": live.ready,
            }
            for name, live in self.models.items()
        }
        for name, error in self.spec_errors.items():
            described.setdefault(name, {})["error"] = error
        return described
