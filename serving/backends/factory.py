"""The adapters for the local stack's servers, wired to the folders and ports ``flywheel up`` uses."""

from __future__ import annotations

from flywheel.settings import FlywheelSettings
from model_store import ModelStore
from serving.backends.base import ModelBackend
from serving.backends.tfserving import TFServingBackend
from serving.backends.torchserve import TorchServeBackend
from serving.backends.triton import TritonBackend

BACKEND_KINDS = ("triton", "torchserve", "tfserving")


def build_backend(kind: str, settings: FlywheelSettings, store: ModelStore) -> ModelBackend:
    host, root, timeout = settings.host, settings.serving_dir, settings.backend_timeout_s
    if kind == "triton":
        return TritonBackend(
            store,
            root / "triton" / "repository",
            f"http://{host}:{settings.triton_http_port}",
            f"http://{host}:{settings.triton_metrics_port}/metrics",
            timeout_s=timeout,
            device=settings.serving_device,
        )
    if kind == "torchserve":
        return TorchServeBackend(
            store,
            root / "torchserve" / "model-store",
            f"http://{host}:{settings.torchserve_inference_port}",
            f"http://{host}:{settings.torchserve_management_port}",
            f"http://{host}:{settings.torchserve_metrics_port}/metrics",
            timeout_s=timeout,
        )
    if kind == "tfserving":
        return TFServingBackend(
            store,
            root / "tfserving" / "models",
            root / "tfserving" / "models.config",
            f"http://{host}:{settings.tfserving_rest_port}",
            f"{host}:{settings.tfserving_grpc_port}",
            timeout_s=timeout,
        )
    raise ValueError(f"unknown backend {kind!r}; choose from {', '.join(BACKEND_KINDS)}")
