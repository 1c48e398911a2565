"""Model agents as local stack services: one per server replica, each on its own status port."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ServiceSpec, http_probe


@dataclass(frozen=True)
class AgentLayout:
    kind: str
    replica: int
    server: str  # the replica's service name: triton, triton-1, ...
    port: int

    @property
    def name(self) -> str:
        return f"agent-{self.server}"


def agent_layouts(settings: FlywheelSettings) -> list[AgentLayout]:
    """One agent per server replica, on consecutive ports from ``agent_port`` in stack order."""
    from serving.backends.factory import replica_layouts
    from serving.backends.registry import backend_kinds

    layouts: list[AgentLayout] = []
    for kind in backend_kinds():
        for replica in replica_layouts(settings, kind):
            layouts.append(AgentLayout(kind, replica.index, replica.name, settings.agent_port + len(layouts)))
    return layouts


def agent_service(settings: FlywheelSettings, layout: AgentLayout) -> ServiceSpec:
    url = f"http://{settings.host}:{layout.port}"
    return ServiceSpec(
        name=layout.name,
        argv=[
            sys.executable,
            "-m",
            "serving.agent",
            "--kind",
            layout.kind,
            "--replica",
            str(layout.replica),
            "--port",
            str(layout.port),
        ],
        probe=http_probe(f"{url}/healthz"),
        urls={"status": f"{url}/v1/agent/status", "metrics": f"{url}/metrics"},
        env=settings.as_env(),
        cwd=settings.home,
    )
