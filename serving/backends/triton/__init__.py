"""Triton Inference Server: KServe v2 over HTTP, explicit model control, the Python backend."""

from __future__ import annotations

import shutil
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

#: Runs the exported TorchScript inside Triton's Python backend (copied in as ``model.py``).
TRITON_ENTRY = Path(__file__).with_name("triton_model.py")


class TritonPlugin(BackendPlugin):
    kind = "triton"
    title = "Triton"
    formats = ("torchscript",)
    ports = (
        ServerPort("http", "triton_http_port", 8000),
        ServerPort("grpc", "triton_grpc_port", 8001, scheme="tcp"),
        ServerPort("metrics", "triton_metrics_port", 8002),
    )
    health = ("http", "/v2/health/ready", 200)
    metrics = ("metrics", "/metrics")

    def repository(self, layout: ReplicaLayout) -> Path:
        return layout.folder / "repository"

    def build_adapter(
        self,
        store: ModelStore,
        endpoints: dict[str, str],
        repository: Path | None,
        timeout_s: float,
        device: str = "cpu",
    ) -> ModelBackend:
        from serving.backends.triton.adapter import TritonBackend

        return TritonBackend(
            store,
            repository or DATA_PLANE_ONLY,
            endpoints["http"],
            self.metrics_url(endpoints),
            timeout_s=timeout_s,
            device=device,
        )

    def runtime(self, layout: ReplicaLayout, device: str = "cpu") -> ServiceSpec:
        from serving.backends.triton.runtime import TritonPorts, triton_service

        ports = TritonPorts(layout.ports["http"], layout.ports["grpc"], layout.ports["metrics"])
        return triton_service(layout.name, self.repository(layout), layout.folder, ports, layout.host)

    def package(self, inputs: PackageInputs, output: Path) -> list[str]:
        from model_store.manifest import Signature
        from serving.backends.triton.packaging import triton_config

        if inputs.torchscript is None:
            return []
        signature = Signature.model_validate_json(inputs.signature_file.read_text())
        model_dir = output / "triton" / inputs.name
        (model_dir / "{version}").mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(triton_config(inputs.name, signature))
        shutil.copy(TRITON_ENTRY, model_dir / "{version}" / "model.py")
        shutil.copy(inputs.torchscript, model_dir / "{version}" / "model.pt")
        return [str(path.relative_to(output)) for path in sorted(model_dir.rglob("*")) if path.is_file()]


PLUGIN = TritonPlugin()
