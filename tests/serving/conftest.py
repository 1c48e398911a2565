"""Real model servers for the adapter tests, one per kind, each with its adapter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flywheel.stack.process import ProcessRecord, ServiceSpec, stop_process
from serving.backends.base import ModelBackend
from serving.backends.tfserving.adapter import TFServingBackend
from serving.backends.tfserving.runtime.service import TFServingPorts, tfserving_service
from serving.backends.torchserve.adapter import TorchServeBackend
from serving.backends.torchserve.runtime import TorchServePorts, torchserve_service
from serving.backends.triton.adapter import TritonBackend
from serving.backends.triton.runtime import TritonPorts, triton_service
from tests.serving.gateway_fixtures import canary, gateway_stack  # noqa: F401  (shared by test_gateway*)
from tests.serving.replica_fixtures import replica_stack  # noqa: F401  (test_replicas)
from tests.support import free_port, start_and_wait


@dataclass
class LiveServer:
    kind: str
    spec: ServiceSpec
    health_url: str
    workdir: Path
    record: ProcessRecord
    make_backend: Any  # () -> ModelBackend

    def restart(self) -> None:
        stop_process(self.record, 20)
        self.record = start_and_wait(self.spec, self.workdir, self.health_url, timeout_s=180)


def _start(kind: str, workdir: Path, store: Any) -> LiveServer:
    if kind == "triton":
        ports = TritonPorts(free_port(), free_port(), free_port())
        repository = workdir / "repository"
        spec = triton_service("triton-test", repository, workdir, ports)
        health = f"http://127.0.0.1:{ports.http}/v2/health/ready"

        def make() -> ModelBackend:
            return TritonBackend(store, repository, spec.urls["http"], spec.urls["metrics"], timeout_s=5)

    elif kind == "torchserve":
        ts_ports = TorchServePorts(free_port(), free_port(), free_port(), free_port(), free_port())
        model_store = workdir / "model-store"
        spec = torchserve_service("torchserve-test", model_store, workdir / "ts", ts_ports)
        health = f"http://127.0.0.1:{ts_ports.inference}/ping"

        def make() -> ModelBackend:
            return TorchServeBackend(
                store,
                model_store,
                spec.urls["inference"],
                spec.urls["management"],
                spec.urls["metrics"],
                timeout_s=5,
            )

    else:
        tf_ports = TFServingPorts(free_port(), free_port())
        base, config = workdir / "models", workdir / "models.config"
        spec = tfserving_service("tfserving-test", base, config, tf_ports)
        health = f"http://127.0.0.1:{tf_ports.rest}/v1/models/__health__"

        def make() -> ModelBackend:
            return TFServingBackend(store, base, config, spec.urls["rest"], spec.urls["grpc"], timeout_s=5)

    record = start_and_wait(spec, workdir, health, timeout_s=180)
    return LiveServer(kind, spec, health, workdir, record, make)


@pytest.fixture(scope="module", params=["triton", "torchserve", "tfserving"])
def live_server(
    request: pytest.FixtureRequest,
    drifted_run: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    server = _start(request.param, tmp_path_factory.mktemp(request.param), drifted_run.store)
    yield server
    stop_process(server.record, 30)
