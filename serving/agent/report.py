"""What an agent tells the others: its replica's addresses and each version's state.

Written to ``agents/<kind>/<replica>.json`` whenever something changes and at least every few
seconds (a heartbeat). Readers treat a report older than ``agent_stale_after_s`` as a replica
that is gone. The gateway learns the replicas it may route to from these reports, and the rollout
controller and deploys learn from them whether a version is ready on every replica.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from model_store.backends.base import ObjectStorage
from model_store.errors import ModelStoreError

log = logging.getLogger(__name__)
PREFIX = "agents/"

VersionPhase = Literal["loading", "ready", "failed", "unloading"]


class VersionState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    version: int
    phase: VersionPhase
    needed: str | None = Field(default=None, description="live, stable or staged; None: not needed.")
    reason: str = ""
    since: datetime = Field(default_factory=lambda: datetime.now(UTC))


class AgentReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str = Field(description="The replica's name, e.g. triton or triton-1.")
    kind: str
    replica: int
    endpoints: dict[str, str]
    status_url: str = ""
    server_up: bool = False
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    versions: list[VersionState] = Field(default_factory=list)

    def age_s(self) -> float:
        return (datetime.now(UTC) - self.updated_at).total_seconds()

    def phase_of(self, model: str, version: int) -> VersionState | None:
        return next((s for s in self.versions if s.model == model and s.version == version), None)

    def is_ready(self, model: str, version: int) -> bool:
        state = self.phase_of(model, version)
        return self.server_up and state is not None and state.phase == "ready"


def report_key(kind: str, agent: str) -> str:
    return f"{PREFIX}{kind}/{agent}.json"


def write_report(storage: ObjectStorage, report: AgentReport) -> None:
    storage.put(report_key(report.kind, report.agent), report.model_dump_json().encode())


def read_reports(storage: ObjectStorage, stale_after_s: float, kind: str | None = None) -> list[AgentReport]:
    """The fresh reports (of one kind, or all), sorted by kind and replica."""
    reports = []
    for key in storage.list_keys(PREFIX + (f"{kind}/" if kind else "")):
        if not key.endswith(".json"):
            continue
        try:
            report = AgentReport.model_validate_json(storage.get(key).data)
        except (ModelStoreError, ValueError) as error:
            log.warning("skipping unreadable agent report %s: %s", key, error)
            continue
        if report.age_s() <= stale_after_s:
            reports.append(report)
    return sorted(reports, key=lambda report: (report.kind, report.replica))


def readiness(reports: list[AgentReport], kind: str, model: str, version: int) -> tuple[bool, list[str]]:
    """Whether ``version`` is ready on every live replica of ``kind``, and what is missing if not.

    No replica at all is not ready. A failed load names the agent and the server's reason.
    """
    replicas = [report for report in reports if report.kind == kind]
    if not replicas:
        return False, [f"no {kind} replica is reporting (are its model agents running?)"]
    problems = []
    for report in replicas:
        state = report.phase_of(model, version)
        if not report.server_up:
            problems.append(f"{report.agent}: its server is not answering")
        elif state is None:
            problems.append(f"{report.agent}: has not picked v{version} up yet")
        elif state.phase == "failed":
            problems.append(f"{report.agent} could not load {model} v{version}: {state.reason}")
        elif state.phase != "ready":
            problems.append(f"{report.agent}: v{version} is {state.phase}")
    return not problems, problems


def failed_loads(reports: list[AgentReport], kind: str, model: str, version: int) -> list[str]:
    return [
        f"{report.agent} could not load {model} v{version}: {state.reason}"
        for report in reports
        if report.kind == kind
        and (state := report.phase_of(model, version)) is not None
        and state.phase == "failed"
    ]
