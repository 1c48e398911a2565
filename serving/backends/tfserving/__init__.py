"""TF Serving: SavedModels in its numbered layout, config reload over gRPC, REST predictions.

Locally a TF-Serving-protocol runtime (``runtime/``) stands in for the binary, which no registry
here ships; the adapter speaks only TF Serving's own REST paths and gRPC protos.
"""

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


class TFServingPlugin(BackendPlugin):
    kind = "tfserving"
    title = "TF Serving"
    formats = ("savedmodel",)
    ports = (
        ServerPort("rest", "tfserving_rest_port", 8501),
        ServerPort("grpc", "tfserving_grpc_port", 8500, scheme="tcp"),
    )
    # Any answer from the REST port means it is serving; an unknown model is a 404.
    health = ("rest", "/v1/models/__health__", 404)
    # TF Serving's own path, enabled by --monitoring_config_file (the runtime takes the same flag).
    metrics = ("rest", "/monitoring/prometheus/metrics")

    def repository(self, layout: ReplicaLayout) -> Path:
        return layout.folder / "models"

    def build_adapter(
        self,
        store: ModelStore,
        endpoints: dict[str, str],
        repository: Path | None,
        timeout_s: float,
        device: str = "cpu",
    ) -> ModelBackend:
        from serving.backends.tfserving.adapter import TFServingBackend

        base = repository or DATA_PLANE_ONLY
        return TFServingBackend(
            store,
            base,
            base.with_name("models.config"),
            endpoints["rest"],
            endpoints["grpc"],
            timeout_s=timeout_s,
        )

    def runtime(self, layout: ReplicaLayout, device: str = "cpu") -> ServiceSpec:
        from serving.backends.tfserving.runtime.service import TFServingPorts, tfserving_service

        repository = self.repository(layout)
        ports = TFServingPorts(layout.ports["grpc"], layout.ports["rest"])
        return tfserving_service(layout.name, repository, layout.folder / "models.config", ports, layout.host)

    def package(self, inputs: PackageInputs, output: Path) -> list[str]:
        if inputs.savedmodel is None:
            return []
        target = output / "savedmodel" / "{version}"
        shutil.copytree(inputs.savedmodel, target)
        return [str(path.relative_to(output)) for path in sorted(target.rglob("*")) if path.is_file()]


PLUGIN = TFServingPlugin()
