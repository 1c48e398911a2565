"""The services of the local stack (the embedded default), in start order.

Each later capability adds its server here: model-server replicas and their agents, the gateway,
Prometheus, Alertmanager and Airflow. ``flywheel up`` starts exactly this list.
"""

from __future__ import annotations

import sys

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ServiceSpec, http_probe


def s3_service(settings: FlywheelSettings) -> ServiceSpec:
    """moto's S3 server on loopback, durable under ``var/s3`` (see flywheel.stack.s3_server)."""

    def create_buckets() -> None:
        from flywheel.stack.buckets import ensure_bucket

        ensure_bucket(settings, settings.raw_bucket)
        store_uri = settings.resolve_store_uri()
        if store_uri.startswith("s3://"):
            ensure_bucket(settings, store_uri.removeprefix("s3://").partition("/")[0])

    url = f"http://{settings.host}:{settings.s3_port}"
    return ServiceSpec(
        name="s3",
        argv=[
            sys.executable,
            "-m",
            "flywheel.stack.s3_server",
            "--host",
            settings.host,
            "--port",
            str(settings.s3_port),
            "--data-dir",
            str(settings.s3_data_dir),
            "--region",
            settings.s3_region,
        ],
        probe=http_probe(f"{url}/"),
        urls={"s3": url},
        cwd=settings.home,
        after_start=create_buckets,
    )


def model_server_services(settings: FlywheelSettings) -> list[ServiceSpec]:
    """Every replica of every registered server kind (``serving/backends/<kind>/``), each with its
    own folder under ``var/serving`` and its own ports."""
    from serving.backends.factory import all_replica_layouts
    from serving.backends.registry import get_plugin

    return [
        get_plugin(layout.kind).runtime(layout, settings.serving_device)
        for layout in all_replica_layouts(settings)
    ]


def agent_services(settings: FlywheelSettings) -> list[ServiceSpec]:
    """One model agent per server replica (``serving/agent``): it pulls the versions the specs need."""
    from serving.agent.service import agent_layouts, agent_service

    return [agent_service(settings, layout) for layout in agent_layouts(settings)]


def build_services(settings: FlywheelSettings) -> list[ServiceSpec]:
    """Every service ``flywheel up`` manages, in the order they start."""
    from flywheel.stack.airflow import airflow_services
    from flywheel.stack.credentials import admin_token, airflow_password
    from monitoring.services import monitoring_services
    from serving.gateway.service import gateway_services
    from serving.rollout.service import rollout_service

    return [
        s3_service(settings),
        *model_server_services(settings),
        *agent_services(settings),
        *gateway_services(settings, admin_token(settings), airflow_password=airflow_password(settings)),
        rollout_service(settings),
        *monitoring_services(settings),
        *airflow_services(settings),
    ]
