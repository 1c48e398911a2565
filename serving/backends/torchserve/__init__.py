"""TorchServe: the management API registers versions, predictions go to per-version URLs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from serving.backends.registry import (
    DATA_PLANE_ONLY,
    BackendPlugin,
    PackageInputs,
    ReplicaLayout,
    ServerPort,
)

if TYPE_CHECKING:
    from flywheel.stack.process import ServiceSpec
    from model_store import ModelStore
    from serving.backends.base import ModelBackend


class TorchServePlugin(BackendPlugin):
    kind = "torchserve"
    title = "TorchServe"
    formats = ("torchscript",)
    ports = (
        ServerPort("inference", "torchserve_inference_port", 8080),
        ServerPort("management", "torchserve_management_port", 8081),
        ServerPort("metrics", "torchserve_metrics_port", 8082),
        ServerPort("grpc", "torchserve_grpc_inference_port", 7070, scheme="tcp"),
        ServerPort("grpc_management", "torchserve_grpc_management_port", 7071, scheme="tcp"),
    )
    health = ("inference", "/ping", 200)
    metrics = ("metrics", "/metrics")

    def repository(self, layout: ReplicaLayout) -> Path:
        return layout.folder / "model-store"

    def build_adapter(
        self,
        store: ModelStore,
        endpoints: dict[str, str],
        repository: Path | None,
        timeout_s: float,
        device: str = "cpu",
    ) -> ModelBackend:
        from serving.backends.torchserve.adapter import TorchServeBackend

        return TorchServeBackend(
            store,
            repository or DATA_PLANE_ONLY,
            endpoints["inference"],
            endpoints["management"],
            self.metrics_url(endpoints),
            timeout_s=timeout_s,
        )

    def runtime(self, layout: ReplicaLayout, device: str = "cpu") -> ServiceSpec:
        from serving.backends.torchserve.runtime import TorchServePorts, torchserve_service

        ports = TorchServePorts(*(layout.ports[port.name] for port in self.ports))
        return torchserve_service(
            layout.name,
            self.repository(layout),
            layout.folder,
            ports,
            layout.host,
            gpus_per_worker=1 if device == "gpu" else 0,
        )

    def package(self, inputs: PackageInputs, output: Path) -> list[str]:
        from serving.backends.torchserve.packaging import build_mar

        if inputs.torchscript is None:
            return []
        archive = build_mar(inputs.name, inputs.torchscript, inputs.signature_file, output / "torchserve")
        return [str(archive.relative_to(output))]


PLUGIN = TorchServePlugin()
