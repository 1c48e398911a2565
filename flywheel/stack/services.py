"""The services of the local stack (the embedded default), in start order.

Each later capability adds its server here: model servers, the gateway, Prometheus,
Alertmanager and Airflow. ``flywheel up`` starts exactly this list.
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
    """Triton, TorchServe and the TF-Serving-protocol runtime, with state under ``var/serving``."""
    from serving.runtimes.tfserving.service import TFServingPorts, tfserving_service
    from serving.runtimes.torchserve import TorchServePorts, torchserve_service
    from serving.runtimes.triton import TritonPorts, triton_service

    root, host = settings.serving_dir, settings.host
    return [
        triton_service(
            "triton",
            root / "triton" / "repository",
            root / "triton",
            TritonPorts(settings.triton_http_port, settings.triton_grpc_port, settings.triton_metrics_port),
            host,
        ),
        torchserve_service(
            "torchserve",
            root / "torchserve" / "model-store",
            root / "torchserve",
            TorchServePorts(
                settings.torchserve_inference_port,
                settings.torchserve_management_port,
                settings.torchserve_metrics_port,
                settings.torchserve_grpc_inference_port,
                settings.torchserve_grpc_management_port,
            ),
            host,
            gpus_per_worker=1 if settings.serving_device == "gpu" else 0,
        ),
        tfserving_service(
            "tfserving",
            root / "tfserving" / "models",
            root / "tfserving" / "models.config",
            TFServingPorts(settings.tfserving_grpc_port, settings.tfserving_rest_port),
            host,
        ),
    ]


def build_services(settings: FlywheelSettings) -> list[ServiceSpec]:
    """Every service ``flywheel up`` manages, in the order they start."""
    from flywheel.stack.airflow import airflow_services
    from flywheel.stack.credentials import admin_token, airflow_password
    from monitoring.services import monitoring_services
    from serving.gateway.service import gateway_service
    from serving.rollout.service import rollout_service

    return [
        s3_service(settings),
        *model_server_services(settings),
        gateway_service(settings, admin_token(settings), airflow_password=airflow_password(settings)),
        rollout_service(settings),
        *monitoring_services(settings),
        *airflow_services(settings),
    ]
