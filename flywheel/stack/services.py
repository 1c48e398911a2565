"""The services of the local stack (the embedded default), in start order.

Each later capability adds its server here: model-server replicas and their agents, the gateway,
Prometheus, Alertmanager and Airflow. ``flywheel up`` starts exactly this list.
"""

from __future__ import annotations

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import HealthProbe, ServiceSpec


def s3_service(settings: FlywheelSettings) -> ServiceSpec:
    """SeaweedFS's S3 endpoint on loopback, durable under ``var/seaweedfs`` (see flywheel.stack.seaweedfs)."""
    from flywheel.stack.seaweedfs import prepare_data_dir, seaweedfs_argv, seaweedfs_environment

    def create_buckets() -> None:
        from flywheel.stack.buckets import ensure_bucket

        ensure_bucket(settings, settings.raw_bucket)
        store_uri = settings.resolve_store_uri()
        if store_uri.startswith("s3://"):
            ensure_bucket(settings, store_uri.removeprefix("s3://").partition("/")[0])

    url = f"http://{settings.host}:{settings.s3_port}"
    return ServiceSpec(
        name="s3",
        argv=seaweedfs_argv(settings, settings.s3_data_dir),
        probe=s3_probe(settings),
        urls={"s3": url},
        env=seaweedfs_environment(settings),
        cwd=settings.s3_data_dir,  # weed reads security.toml from its working folder
        prepare=lambda: prepare_data_dir(settings, settings.s3_data_dir),
        after_start=create_buckets,
    )


def s3_probe(settings: FlywheelSettings) -> HealthProbe:
    """Healthy when a signed ListBuckets succeeds: the S3 gateway, filer and auth all answer."""

    def probe() -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        from model_store.backends.s3 import s3_client

        try:
            s3_client(settings, max_attempts=1, timeout_s=2).list_buckets()
        except (BotoCoreError, ClientError) as error:
            return f"{settings.s3_url}: {type(error).__name__}"
        return None

    return probe


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
    from flywheel.stack.spark_cluster import spark_cluster_services
    from monitoring.services import monitoring_services
    from serving.gateway.service import gateway_services
    from serving.rollout.service import rollout_service

    # An external endpoint (s3_endpoint_url, e.g. AWS) replaces the local SeaweedFS.
    local_s3 = [] if settings.s3_endpoint_url else [s3_service(settings)]
    return [
        *local_s3,
        *spark_cluster_services(settings),
        *model_server_services(settings),
        *agent_services(settings),
        *gateway_services(settings, admin_token(settings), airflow_password=airflow_password(settings)),
        rollout_service(settings),
        *monitoring_services(settings),
        *airflow_services(settings),
    ]
