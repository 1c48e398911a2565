"""The gateway's view of the server replicas: discovered from the agents' reports, spread by load.

:class:`ServerDirectory` reads ``agents/<kind>/<replica>.json`` from the store (the agents write
them) and keeps one :class:`ReplicaSet` per registered kind. A replica set is what the gateway
calls as "the triton backend": it sends each request to one of the replicas that report the
version ready, choosing by the power of two choices on outstanding requests, and on a refused
connection or a lost version it tries the next replica within the same call (inference is
idempotent). A replica that fails is ejected for a while, longer each time it fails again, and
taken back once it answers. The gateway never loads or unloads anything: the agents do.

The per-request work is a filter over the replicas of one kind and two random picks, so it does
not grow with the number of models or gateway replicas.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from model_store import ModelStore
from model_store.errors import ModelStoreError
from serving.agent.report import AgentReport, read_reports, readiness
from serving.backends.base import (
    BackendError,
    BackendUnavailableError,
    ModelBackend,
    ModelNotLoadedError,
    Tensors,
    VersionNotLoadedError,
)
from serving.backends.registry import backend_kinds, get_plugin

log = logging.getLogger(__name__)
#: A replica stays routable until its report is this many times older than the staleness limit.
STALE_ROUTABLE_FACTOR = 4.0
#: First and longest ejection of a replica that failed a request.
EJECT_S = (1.0, 15.0)


class GatewayDoesNotLoadError(BackendError):
    status = 500

    def __init__(self, kind: str) -> None:
        super().__init__(
            f"the gateway does not load models on {kind}: the model agents do; deploy writes the "
            "desired state and they converge on it"
        )


@dataclass
class Replica:
    name: str
    adapter: ModelBackend
    endpoints: dict[str, str]
    report: AgentReport
    outstanding: int = 0
    ejected_until: float = 0.0
    eject_s: float = EJECT_S[0]
    #: Versions this replica answered "not loaded" for since its last report (it restarted).
    lost: set[tuple[str, int]] = field(default_factory=set)

    def serves(self, model: str, version: int) -> bool:
        return self.report.is_ready(model, version) and (model, version) not in self.lost


class ReplicaSet:
    """Every live replica of one server kind, behind the ModelBackend interface."""

    def __init__(self, kind: str, rng: random.Random | None = None) -> None:
        self.kind = kind
        self.metrics_url = ""
        self.replicas: dict[str, Replica] = {}
        self._index: dict[tuple[str, int], list[Replica]] = {}
        self._rng = rng or random.Random()
        #: Called with (kind, replica, outcome) per attempt: ok, unavailable, not_loaded.
        self.on_attempt: Callable[[str, str, str], None] = lambda kind, replica, outcome: None

    # Membership (from the directory) ------------------------------------------------------------
    def update(
        self, reports: list[AgentReport], build: Callable[[dict[str, str]], ModelBackend]
    ) -> list[ModelBackend]:
        """Take the kind's fresh reports; returns adapters of replicas that left (to close)."""
        retired = []
        seen = set()
        for report in reports:
            seen.add(report.agent)
            current = self.replicas.get(report.agent)
            if current is not None and current.endpoints == report.endpoints:
                if report.updated_at != current.report.updated_at:
                    current.lost.clear()  # a newer report is the truth about what it holds
                current.report = report
                continue
            if current is not None:
                retired.append(current.adapter)
            self.replicas[report.agent] = Replica(
                report.agent, build(report.endpoints), report.endpoints, report
            )
        for gone in set(self.replicas) - seen:
            retired.append(self.replicas.pop(gone).adapter)
        self._reindex()
        return retired

    def _reindex(self) -> None:
        """(model, version) -> the replicas reporting it ready: built per report, read per request."""
        index: dict[tuple[str, int], list[Replica]] = {}
        for replica in self.replicas.values():
            if replica.report.server_up:
                for state in replica.report.versions:
                    if state.phase == "ready":
                        index.setdefault((state.model, state.version), []).append(replica)
        self._index = index

    # Choosing ---------------------------------------------------------------------------------
    def _choose(self, candidates: list[Replica]) -> Replica:
        if len(candidates) == 1:
            return candidates[0]
        first, second = self._rng.sample(candidates, 2)
        return first if first.outstanding <= second.outstanding else second

    def _pick(self, model: str, version: int, tried: set[str]) -> Replica | None:
        """A replica for this request, in constant time however many there are.

        Two random replicas that report the version ready; the one with fewer outstanding
        requests wins. Only when one of them is ejected, already tried or lost the version (a
        failure is going on) are all the version's replicas scanned.
        """
        key = (model, version)
        pool = self._index.get(key, ())
        now = time.monotonic()
        if len(pool) > 2 and not tried:
            first, second = self._rng.sample(pool, 2)
            if all(r.ejected_until <= now and key not in r.lost for r in (first, second)):
                return first if first.outstanding <= second.outstanding else second
        serving = [r for r in pool if r.name not in tried and key not in r.lost]
        healthy = [r for r in serving if r.ejected_until <= now]
        candidates = healthy or serving  # all ejected: try them anyway rather than fail at once
        return self._choose(candidates) if candidates else None

    def _eject(self, replica: Replica, error: BackendError) -> None:
        now = time.monotonic()
        if replica.ejected_until > now - replica.eject_s:
            replica.eject_s = min(replica.eject_s * 2, EJECT_S[1])
        else:
            replica.eject_s = EJECT_S[0]
        replica.ejected_until = now + replica.eject_s
        log.warning("%s ejected for %.0f s: %s", replica.name, replica.eject_s, error)

    # ModelBackend -------------------------------------------------------------------------------
    async def infer(self, model: str, version: int, inputs: Tensors) -> Tensors:
        tried: set[str] = set()
        last_error: BackendError | None = None
        while (replica := self._pick(model, version, tried)) is not None:
            tried.add(replica.name)
            replica.outstanding += 1
            try:
                outputs = await replica.adapter.infer(model, version, inputs)
            except BackendUnavailableError as error:
                self._eject(replica, error)
                self.on_attempt(self.kind, replica.name, "unavailable")
                last_error = error
                continue
            except ModelNotLoadedError as error:
                replica.lost.add((model, version))  # restarted empty: its agent is reloading it
                self.on_attempt(self.kind, replica.name, "not_loaded")
                last_error = error
                continue
            except asyncio.CancelledError:
                # The caller's budget ran out on this replica (it accepts but does not answer):
                # eject it, so the next requests go to its siblings instead of waiting on it too.
                self._eject(replica, BackendUnavailableError(f"{replica.name} did not answer in time"))
                self.on_attempt(self.kind, replica.name, "unavailable")
                raise
            finally:
                replica.outstanding -= 1
            self.on_attempt(self.kind, replica.name, "ok")
            replica.eject_s = EJECT_S[0] if replica.ejected_until <= time.monotonic() else replica.eject_s
            return outputs
        if last_error is not None:
            raise last_error
        if not self.replicas:
            raise BackendUnavailableError(
                f"no {self.kind} replica is reporting (are its model agents running?)"
            )
        if not any(replica.report.server_up for replica in self.replicas.values()):
            raise BackendUnavailableError(f"{self.kind} is unavailable: no replica's server is answering")
        raise VersionNotLoadedError(model, version, await self.loaded_versions(model), self.kind)

    async def ready(self, model: str, version: int) -> bool:
        return any(replica.serves(model, version) for replica in self.replicas.values())

    async def loaded_versions(self, model: str) -> list[int]:
        return sorted(
            {
                state.version
                for replica in self.replicas.values()
                for state in replica.report.versions
                if state.model == model and replica.serves(model, state.version)
            }
        )

    async def metadata(self, model: str, version: int) -> dict[str, Any]:
        for replica in self.replicas.values():
            if replica.serves(model, version):
                return await replica.adapter.metadata(model, version)
        raise VersionNotLoadedError(model, version, await self.loaded_versions(model), self.kind)

    async def load(self, model: str, version: int) -> None:
        raise GatewayDoesNotLoadError(self.kind)

    async def unload(self, model: str, version: int) -> None:
        raise GatewayDoesNotLoadError(self.kind)

    async def aclose(self) -> None:
        for replica in self.replicas.values():
            await replica.adapter.aclose()
        self.replicas.clear()

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "replica": replica.name,
                "server_up": replica.report.server_up,
                "outstanding": replica.outstanding,
                "ejected_for_s": round(max(0.0, replica.ejected_until - now), 1),
                "ready": [f"{s.model}:{s.version}" for s in replica.report.versions if s.phase == "ready"],
            }
            for replica in self.replicas.values()
        ]


class ServerDirectory:
    """Every kind's replica set, refreshed from the agents' reports in the store."""

    def __init__(
        self, store: ModelStore, stale_after_s: float, timeout_s: float, device: str = "cpu"
    ) -> None:
        self.store = store
        self.stale_after_s = stale_after_s
        self.timeout_s = timeout_s
        self.device = device
        self.sets: dict[str, ReplicaSet] = {kind: ReplicaSet(kind) for kind in backend_kinds()}
        self.reports: list[AgentReport] = []
        self.last_error: str | None = None
        self._lock = asyncio.Lock()

    def _builder(self, kind: str) -> Callable[[dict[str, str]], ModelBackend]:
        plugin = get_plugin(kind)
        return lambda endpoints: plugin.build_adapter(
            self.store, endpoints, None, self.timeout_s, self.device
        )

    async def refresh(self) -> None:
        async with self._lock:
            try:
                # Routing keeps a replica whose report is a little late (agents starved of CPU, a
                # slow store): its requests still go there until they fail and eject it. Only
                # readiness (deploys, rollouts) insists on fresh reports.
                horizon = self.stale_after_s * STALE_ROUTABLE_FACTOR
                reports = await asyncio.to_thread(read_reports, self.store.storage, horizon)
            except (ModelStoreError, OSError) as error:
                if self.last_error != str(error):
                    log.error("agent reports unreadable, keeping the last replicas: %s", error)
                self.last_error = str(error)
                return
            self.last_error = None
            self.reports = [report for report in reports if report.age_s() <= self.stale_after_s]
            for kind, replica_set in self.sets.items():
                for adapter in replica_set.update(
                    [r for r in reports if r.kind == kind], self._builder(kind)
                ):
                    await adapter.aclose()

    def readiness(self, kind: str, model: str, version: int) -> tuple[bool, list[str]]:
        return readiness(self.reports, kind, model, version)

    async def aclose(self) -> None:
        for replica_set in self.sets.values():
            await replica_set.aclose()

    def describe(self) -> dict[str, Any]:
        return {kind: replica_set.describe() for kind, replica_set in self.sets.items()}
