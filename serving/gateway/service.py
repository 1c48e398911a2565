"""The gateway as a local stack service."""

from __future__ import annotations

import sys

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ServiceSpec, http_probe


def gateway_service(
    settings: FlywheelSettings, admin_token: str, name: str = "gateway", airflow_password: str | None = None
) -> ServiceSpec:
    """Settings and secrets travel in the environment: never in argv, where ``ps`` shows them.

    ``airflow_password`` turns on the retrain bridge, which triggers the retraining DAG.
    """
    secrets = {"FLYWHEEL_ADMIN_TOKEN": admin_token}
    if airflow_password:
        secrets["FLYWHEEL_AIRFLOW_PASSWORD"] = airflow_password
    url = settings.gateway_url
    return ServiceSpec(
        name=name,
        argv=[sys.executable, "-m", "serving.gateway"],
        probe=http_probe(f"{url}/v2/health/ready"),
        urls={
            "http": url,
            "grpc": f"{settings.host}:{settings.gateway_grpc_port}",
            "metrics": f"{url}/metrics",
        },
        env={**settings.as_env(), **secrets},
        cwd=settings.home,
    )


def gateway_replica_ports(settings: FlywheelSettings) -> list[tuple[int, int]]:
    """(HTTP, gRPC) port of each gateway replica the stack runs."""
    return [(settings.gateway_http_port, settings.gateway_grpc_port)]
