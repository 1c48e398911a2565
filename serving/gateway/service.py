"""The gateway as local stack services: one per replica, and HAProxy in front when there are several."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ServiceSpec, http_probe


@dataclass(frozen=True)
class GatewayLayout:
    index: int
    name: str
    http_port: int
    grpc_port: int


def gateway_layouts(settings: FlywheelSettings) -> list[GatewayLayout]:
    """One replica keeps the public ports; several move off them (the balancer takes them)."""
    if settings.gateway_replicas == 1:
        return [GatewayLayout(0, "gateway", settings.gateway_http_port, settings.gateway_grpc_port)]
    stride = settings.replica_port_stride
    return [
        GatewayLayout(
            index,
            "gateway" if index == 0 else f"gateway-{index}",
            settings.gateway_http_port + (index + 1) * stride,
            settings.gateway_grpc_port + (index + 1) * stride,
        )
        for index in range(settings.gateway_replicas)
    ]


def gateway_replica_ports(settings: FlywheelSettings) -> list[tuple[int, int]]:
    """(HTTP, gRPC) port of each gateway replica the stack runs."""
    return [(layout.http_port, layout.grpc_port) for layout in gateway_layouts(settings)]


def gateway_service(
    settings: FlywheelSettings,
    admin_token: str,
    name: str = "gateway",
    airflow_password: str | None = None,
    layout: GatewayLayout | None = None,
) -> ServiceSpec:
    """Settings and secrets travel in the environment: never in argv, where ``ps`` shows them.

    ``airflow_password`` turns on the retrain bridge, which triggers the retraining DAG.
    ``layout`` places a replica on its own ports (default: the first one's).
    """
    layout = layout or gateway_layouts(settings)[0]
    secrets = {"FLYWHEEL_ADMIN_TOKEN": admin_token}
    if airflow_password:
        secrets["FLYWHEEL_AIRFLOW_PASSWORD"] = airflow_password
    replica = settings.model_copy(
        update={
            "gateway_http_port": layout.http_port,
            "gateway_grpc_port": layout.grpc_port,
            "gateway_replica_name": layout.name,
        }
    )
    url = replica.gateway_url
    return ServiceSpec(
        name=layout.name if layout.index else name,
        argv=[sys.executable, "-m", "serving.gateway"],
        probe=http_probe(f"{url}/v2/health/ready"),
        urls={
            "http": url,
            "grpc": f"{settings.host}:{layout.grpc_port}",
            "metrics": f"{url}/metrics",
        },
        env={**replica.as_env(), **secrets},
        cwd=settings.home,
    )


def gateway_services(
    settings: FlywheelSettings, admin_token: str, airflow_password: str | None = None
) -> list[ServiceSpec]:
    """Every gateway replica, then the load balancer when there are several."""
    from serving.gateway.balancer import load_balancer_service

    replicas = [
        gateway_service(settings, admin_token, airflow_password=airflow_password, layout=layout)
        for layout in gateway_layouts(settings)
    ]
    return replicas if len(replicas) == 1 else [*replicas, load_balancer_service(settings)]
