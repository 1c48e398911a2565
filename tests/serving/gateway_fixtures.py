"""One real serving stack for the gateway tests: Triton, TorchServe, the TF runtime and the gateway.

Started from the same service definitions ``flywheel up`` uses, on free ports, over the store
the session's pipeline run published v1 and v2 into.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ProcessRecord, ServiceSpec, stop_process
from flywheel.stack.services import agent_services, model_server_services
from model_store import ModelStore
from serving.gateway.service import gateway_service
from tasks.stock_forecast.contract import FEATURE_COLUMNS, WINDOW
from tests.pipeline_fixtures import MODEL
from tests.support import free_port, start_and_wait

ADMIN_TOKEN = "test-admin-token-0123456789"


def windows(count: int = 4, seed: int = 3) -> np.ndarray:
    return (
        np.random.default_rng(seed)
        .normal(0, 0.01, size=(count, WINDOW, len(FEATURE_COLUMNS)))
        .astype(np.float32)
    )


def v2_body(features: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "features",
                "shape": list(features.shape),
                "datatype": "FP32",
                "data": features.ravel().tolist(),
            }
        ],
        **extra,
    }


def two_variants(strategy: str, weights: tuple[float, float], **params: Any) -> dict[str, Any]:
    """A spec over v1 on TorchServe and v2 on the TF runtime, as the admin API takes it."""
    return {
        "model": MODEL,
        "strategy": strategy,
        "params": params,
        "variants": [
            {"name": "torchserve-v1", "version": 1, "backend": "torchserve", "weight": weights[0]},
            {"name": "tfserving-v2", "version": 2, "backend": "tfserving", "weight": weights[1]},
        ],
    }


def publish_patched_copy(store: ModelStore, workdir: Path, old: str, new: str) -> int:
    """v2's Triton entry with one edit to its model.py, published as a new version."""
    source = workdir / "v2"
    manifest = store.fetch(MODEL, 2, source, prefix="triton/")
    store.fetch(MODEL, 2, source, prefix="profile.json")
    model_py = source / "triton" / MODEL / "2" / "model.py"
    text = model_py.read_text()
    assert old in text, "the packaged Triton entry changed; update the fault injection"
    model_py.write_text(text.replace(old, new, 1))
    artifacts = {
        str(path.relative_to(source)).replace(f"triton/{MODEL}/2/", f"triton/{MODEL}/{{version}}/"): path
        for path in source.rglob("*")
        if path.is_file()
    }
    published = store.publish(
        MODEL, artifacts, framework=manifest.framework, backends=["triton"], signature=manifest.signature
    )
    return published.version


@dataclass
class GatewayStack:
    settings: FlywheelSettings
    specs: dict[str, ServiceSpec]
    records: dict[str, ProcessRecord]
    workdir: Path
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def url(self) -> str:
        return self.settings.gateway_url

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.settings.gateway_grpc_port}"

    def admin(self, method: str, path: str, token: str | None = ADMIN_TOKEN, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.request(method, f"{self.url}/admin{path}", headers=headers, **kwargs)

    def deploy(self, version: int, backend: str, strategy: str, **extra: Any) -> dict[str, Any]:
        response = self.admin(
            "POST",
            f"/deployments/{MODEL}/deploy",
            json={"version": version, "backend": backend, "strategy": strategy, **extra},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def replace(self, spec: dict[str, Any], reason: str = "test") -> dict[str, Any]:
        current = self.admin("GET", f"/deployments/{MODEL}").json()
        response = self.admin(
            "PUT",
            f"/deployments/{MODEL}",
            json={"expected_revision": current["revision"], "spec": spec, "reason": reason},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def infer(self, features: np.ndarray, version: int | None = None, **kwargs: Any) -> httpx.Response:
        path = f"/versions/{version}" if version else ""
        return self.client.post(f"{self.url}/v2/models/{MODEL}{path}/infer", json=v2_body(features), **kwargs)

    def metrics(self) -> str:
        return self.client.get(f"{self.url}/metrics").text

    def restart(self, name: str) -> None:
        stop_process(self.records[name], 30)
        self.records[name] = start_and_wait(self.specs[name], self.workdir, name, timeout_s=180)


@pytest.fixture(scope="session")
def gateway_stack(drifted_run: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    workdir = tmp_path_factory.mktemp("gateway-stack")
    ports = {
        name: free_port()
        for name in (
            "triton_http_port",
            "triton_grpc_port",
            "triton_metrics_port",
            "torchserve_inference_port",
            "torchserve_management_port",
            "torchserve_metrics_port",
            "torchserve_grpc_inference_port",
            "torchserve_grpc_management_port",
            "tfserving_grpc_port",
            "tfserving_rest_port",
            "gateway_http_port",
            "gateway_grpc_port",
            "agent_port",
        )
    }
    settings = drifted_run.settings.model_copy(
        update={
            **ports,
            "var_dir": workdir / "var",
            "store_uri": drifted_run.store.uri,
            "backend_timeout_s": 5.0,
            "routing_reload_interval_s": 0.2,
            "drift_sample_rate": 1.0,
            # Only requests that ask (x-flywheel-capture: on) are captured: the capture test
            # counts exactly those, and the load tests pay nothing for it.
            "capture_sample_rate": 0.0,
            "capture_flush_interval_s": 0.5,
            "gateway_max_body_bytes": 1024 * 1024,
            "gateway_body_timeout_s": 2.0,
            "gateway_keepalive_timeout_s": 3.0,
            "agent_interval_s": 0.2,
        }
    )
    specs = {
        spec.name: spec
        for spec in [
            *model_server_services(settings),
            *agent_services(settings),
            gateway_service(settings, ADMIN_TOKEN),
        ]
    }
    records: dict[str, ProcessRecord] = {}
    try:
        for name, spec in specs.items():
            records[name] = start_and_wait(spec, workdir, name, timeout_s=180)
        yield GatewayStack(settings, specs, records, workdir)
    finally:
        for record in reversed(list(records.values())):
            stop_process(record, 30)


@pytest.fixture
def canary(gateway_stack: GatewayStack) -> GatewayStack:
    """v1 on TorchServe (70 %) and v2 on the TF runtime (30 %), whatever ran before."""
    if gateway_stack.admin("GET", f"/deployments/{MODEL}").status_code == 404:
        gateway_stack.deploy(1, "torchserve", "single")
    gateway_stack.replace(two_variants("canary", (70, 30)), reason="test baseline: canary")
    return gateway_stack
