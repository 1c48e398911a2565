"""The agent's reconcile loop: make one server replica hold exactly the versions the specs need.

Each pass: read the specs and stages (what is needed), ask the server what it has, load what is
missing (fetch and verify into this replica's own folder, load through the server's API, wait
until ready, warm up), and unload what no spec has needed for ``unload_grace_s``. A version that
fails to load is reported ``failed`` with the server's reason and retried with a growing backoff.
If the store cannot be read, nothing is unloaded: the last known needs stand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from model_store import ModelStore
from model_store.errors import ModelStoreError
from serving.agent.desired import needed_versions
from serving.agent.report import AgentReport, VersionPhase, VersionState, write_report
from serving.agent.staging import staged_versions
from serving.backends.base import BackendError, BackendUnavailableError, ModelBackend
from serving.backends.warmup import warm_up
from serving.routing.spec import RoutingSpec
from serving.routing.spec_store import SpecStore

log = logging.getLogger(__name__)
Key = tuple[str, int]
#: First and longest wait before a failed load is tried again.
RETRY_S = (2.0, 60.0)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry, agent: str, kind: str) -> None:
        self.registry = registry
        self.agent, self.kind = agent, kind
        self.ready = Gauge(
            "flywheel_agent_version_ready",
            "1 while the version is loaded and ready on this replica, 0 while loading or failed.",
            ["agent", "kind", "model", "version"],
            registry=registry,
        )
        self.loads = Counter(
            "flywheel_agent_loads",
            "Loads this agent ran, by result.",
            ["agent", "kind", "result"],
            registry=registry,
        )
        self.unloads = Counter(
            "flywheel_agent_unloads",
            "Versions unloaded after the grace period.",
            ["agent", "kind"],
            registry=registry,
        )
        self.server_up = Gauge(
            "flywheel_agent_server_up",
            "1 while the agent's server answers.",
            ["agent", "kind"],
            registry=registry,
        )


class ModelAgent:
    def __init__(
        self,
        name: str,
        kind: str,
        replica: int,
        store: ModelStore,
        adapter: ModelBackend,
        endpoints: dict[str, str],
        *,
        status_url: str = "",
        unload_grace_s: float = 60.0,
        heartbeat_s: float = 3.0,
        load_ready_timeout_s: float = 120.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.kind, self.replica = name, kind, replica
        self.store = store
        self.spec_store = SpecStore(store.storage)
        self.adapter = adapter
        self.endpoints = endpoints
        self.status_url = status_url
        self.unload_grace_s = unload_grace_s
        self.heartbeat_s = heartbeat_s
        self.load_ready_timeout_s = load_ready_timeout_s
        self.metrics = AgentMetrics(registry or CollectorRegistry(), name, kind)
        self.states: dict[Key, VersionState] = {}
        self.server_up = False
        self.last_error: str | None = None
        self._needed: dict[Key, str] = {}
        self._needed_by_model: dict[str, dict[Key, str]] = {}
        self._unneeded_since: dict[Key, float] = {}
        self._retry_at: dict[Key, tuple[float, float]] = {}  # key -> (next try, current backoff)
        self._last_report: tuple[object, ...] | None = None
        self._last_written = 0.0

    # What is needed ----------------------------------------------------------------------------
    def _read_needs(self) -> tuple[dict[Key, str], bool]:
        """Blocking (store reads). Returns the needs and whether every spec could be read.

        A spec that cannot be read keeps its model's last known needs, so its versions stay.
        """
        specs: list[RoutingSpec] = []
        complete = True
        unreadable: set[str] = set()
        for model in self.spec_store.models():
            try:
                spec = self.spec_store.find(model)
            except (ModelStoreError, ValueError) as error:
                log.warning("routing spec of %r unreadable, keeping its versions: %s", model, error)
                unreadable.add(model)
                complete = False
                continue
            if spec is not None:
                specs.append(spec)
        needed = needed_versions(specs, staged_versions(self.store.storage), self.kind)
        for model in unreadable:
            needed.update(self._needed_by_model.get(model, {}))
        return needed, complete

    # One pass -----------------------------------------------------------------------------------
    async def reconcile_once(self) -> None:
        try:
            needed, store_complete = await asyncio.to_thread(self._read_needs)
            self.last_error = None
        except (ModelStoreError, OSError, ValueError) as error:
            if self.last_error != str(error):
                log.error("cannot read the routing specs, keeping what is loaded: %s", error)
            self.last_error = str(error)
            needed, store_complete = self._needed, False
        except Exception as error:  # a botocore error, say: keep going on the last needs
            log.exception("reading the routing specs failed: %s", error)
            self.last_error = repr(error)
            needed, store_complete = self._needed, False
        self._needed = needed
        self._needed_by_model = {}
        for key, why in needed.items():
            self._needed_by_model.setdefault(key[0], {})[key] = why

        models = {model for model, _ in needed} | {model for model, _ in self.states}
        try:
            loaded = {model: set(await self.adapter.loaded_versions(model)) for model in sorted(models)}
            self.server_up = True
        except BackendUnavailableError as error:
            if self.server_up:
                log.warning("%s is not answering: %s", self.name, error)
            self.server_up = False
            await self.publish()
            return
        self.metrics.server_up.labels(self.name, self.kind).set(1)

        for key, why in sorted(needed.items()):
            await self._ensure_loaded(key, why, loaded.get(key[0], set()))
            if not self.server_up:  # it went away mid-pass: report that, touch nothing else
                await self.publish()
                return
        if store_complete:
            await self._unload_unneeded(needed, loaded)
        await self.publish()

    async def _ensure_loaded(self, key: Key, why: str, loaded: set[int]) -> None:
        model, version = key
        self._unneeded_since.pop(key, None)
        state = self.states.get(key)
        if version in loaded and await self.adapter.ready(model, version):
            if state is None or state.phase != "ready":
                self._set(key, "ready", why)
            elif state.needed != why:
                state.needed = why
            return
        retry = self._retry_at.get(key)
        if retry is not None and time.monotonic() < retry[0]:
            return
        try:
            await self.adapter.loaded_versions(model)  # not ready, or not answering at all?
        except BackendUnavailableError:
            self.server_up = False
            return
        self._set(
            key, "loading", why, "restarted empty" if state is not None and state.phase == "ready" else ""
        )
        await self.publish()
        log.info("%s: loading %s v%s (%s)", self.name, model, version, why)
        try:
            await self.adapter.load(model, version)
            deadline = time.monotonic() + self.load_ready_timeout_s
            while not await self.adapter.ready(model, version):
                # ready() says False for a server that is gone too: ask something that raises
                # BackendUnavailableError then, so a restart mid-load is an outage, not a bad version.
                await self.adapter.loaded_versions(model)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"loaded but not ready after {self.load_ready_timeout_s:g} s")
                await asyncio.sleep(0.2)
            signature = (await asyncio.to_thread(self.store.get_manifest, model, version)).signature
            await warm_up(self.adapter, model, version, signature)
        except BackendUnavailableError as error:
            # The server went away (killed, restarting): an outage, not a bad version. Its state
            # stays what it was; the next pass loads it once the server answers again.
            log.warning(
                "%s: its server stopped answering while loading %s v%s: %s", self.name, model, version, error
            )
            self.server_up = False
            if state is not None:
                self.states[key] = state
            else:
                self.states.pop(key, None)
            return
        except (BackendError, ModelStoreError, OSError, TimeoutError, ValueError) as error:
            reason = getattr(error, "message", None) or str(error) or type(error).__name__
            backoff = min(retry[1] * 2, RETRY_S[1]) if retry else RETRY_S[0]
            self._retry_at[key] = (time.monotonic() + backoff, backoff)
            self._set(key, "failed", why, reason)
            self.metrics.loads.labels(self.name, self.kind, "failed").inc()
            log.warning(
                "%s: cannot load %s v%s (retry in %.0f s): %s", self.name, model, version, backoff, reason
            )
            return
        self._retry_at.pop(key, None)
        self._set(key, "ready", why)
        self.metrics.loads.labels(self.name, self.kind, "ok").inc()
        log.info("%s: %s v%s ready", self.name, model, version)

    async def _unload_unneeded(self, needed: dict[Key, str], loaded: dict[str, set[int]]) -> None:
        now = time.monotonic()
        for model, versions in loaded.items():
            for version in sorted(versions):
                key = (model, version)
                if key in needed:
                    continue
                since = self._unneeded_since.setdefault(key, now)
                state = self.states.get(key)
                if state is None or state.phase != "ready" or state.needed is not None:
                    self._set(key, "ready", None, "no spec needs it; unloading after the grace period")
                if now - since < self.unload_grace_s:
                    continue
                log.info("%s: unloading %s v%s (unneeded for %.0f s)", self.name, model, version, now - since)
                self._set(key, "unloading", None)
                try:
                    await self.adapter.unload(model, version)
                except BackendError as error:
                    log.warning("%s: unloading %s v%s failed: %s", self.name, model, version, error)
                    continue
                self.states.pop(key, None)
                self._unneeded_since.pop(key, None)
                self.metrics.ready.remove(self.name, self.kind, model, str(version))
                self.metrics.unloads.labels(self.name, self.kind).inc()
        # Failed or loading entries of versions nobody needs any more are forgotten.
        for key in [
            key for key, state in self.states.items() if key not in needed and state.phase != "ready"
        ]:
            if key[1] not in loaded.get(key[0], set()):
                self.states.pop(key)
                self._retry_at.pop(key, None)
                self.metrics.ready.remove(self.name, self.kind, key[0], str(key[1]))

    def _set(self, key: Key, phase: VersionPhase, needed: str | None, reason: str = "") -> None:
        self.states[key] = VersionState(
            model=key[0], version=key[1], phase=phase, needed=needed, reason=reason, since=datetime.now(UTC)
        )
        self.metrics.ready.labels(self.name, self.kind, key[0], str(key[1])).set(1 if phase == "ready" else 0)

    # Reporting ----------------------------------------------------------------------------------
    def report(self) -> AgentReport:
        return AgentReport(
            agent=self.name,
            kind=self.kind,
            replica=self.replica,
            endpoints=self.endpoints,
            status_url=self.status_url,
            server_up=self.server_up,
            versions=sorted(self.states.values(), key=lambda state: (state.model, state.version)),
        )

    async def publish(self, force: bool = False) -> None:
        """Write the report when anything changed, and at least every ``heartbeat_s``."""
        self.metrics.server_up.labels(self.name, self.kind).set(1 if self.server_up else 0)
        fingerprint = (
            self.server_up,
            tuple((s.model, s.version, s.phase, s.needed, s.reason) for s in self.states.values()),
        )
        due = time.monotonic() - self._last_written >= self.heartbeat_s
        if not force and not due and fingerprint == self._last_report:
            return
        try:
            await asyncio.to_thread(write_report, self.store.storage, self.report())
        except Exception as error:  # the store is down: the next pass tries again
            log.warning("%s: cannot write its report: %s", self.name, error)
            return
        self._last_report, self._last_written = fingerprint, time.monotonic()

    async def heartbeat(self) -> None:
        """Keep the report fresh while a pass waits on a long load: a report older than the
        readers' staleness limit would take this whole replica out of every gateway."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self.publish()

    async def run(self, interval_s: float) -> None:
        beat = asyncio.create_task(self.heartbeat())
        try:
            while True:
                try:
                    await self.reconcile_once()
                except Exception as error:  # never crash-loop: log and try again next pass
                    log.exception("%s: reconcile pass failed: %s", self.name, error)
                await asyncio.sleep(interval_s)
        finally:
            beat.cancel()
