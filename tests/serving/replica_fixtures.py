"""Two Triton replicas with an agent beside each, two gateway replicas behind HAProxy, over a
store of their own.

The store is private (v1 and v2 copied from the session's pipeline run) because agents report
under their replica's name: a second stack on the same store would be the same replicas.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from flywheel.settings import FlywheelSettings
from flywheel.stack.process import ProcessRecord, ServiceSpec, stop_process
from flywheel.stack.services import agent_services, model_server_services
from model_store import ModelStore
from model_store.store import artifacts_from_directory
from serving.gateway.service import gateway_services
from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import ADMIN_TOKEN, v2_body, windows
from tests.support import free_port, start_and_wait


def free_port_block(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive ports nothing listens on (replicas use base + index)."""
    for _ in range(attempts):
        base = free_port()
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                sockets.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def copy_versions(source: ModelStore, target: ModelStore, workdir: Path, versions: list[int]) -> None:
    for version in versions:
        folder = workdir / f"copy-{version}"
        manifest = source.fetch(MODEL, version, folder)
        artifacts = {
            key.replace(f"/{version}/", "/{version}/"): path
            for key, path in artifacts_from_directory(folder).items()
        }
        published = target.publish(
            MODEL,
            artifacts,
            framework=manifest.framework,
            task=manifest.task,
            output=manifest.output,
            backends=manifest.backends,
            signature=manifest.signature,
        )
        assert published.version == version


@dataclass
class ReplicaStack:
    settings: FlywheelSettings
    store: ModelStore
    specs: dict[str, ServiceSpec]
    records: dict[str, ProcessRecord]
    workdir: Path
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def url(self) -> str:
        return self.settings.gateway_url

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.client.request(method, f"{self.url}/admin{path}", headers=headers, **kwargs)

    def deploy(self, version: int, strategy: str = "single", **extra: Any) -> httpx.Response:
        body = {"version": version, "backend": "triton", "strategy": strategy, **extra}
        return self.admin("POST", f"/deployments/{MODEL}/deploy", json=body)

    def gateway_metrics(self, replica: str) -> str:
        return self.client.get(self.specs[replica].urls["metrics"]).text

    def server_url(self, replica: str) -> str:
        return self.specs[replica].urls["http"]

    def loaded(self, replica: str) -> list[int]:
        """The versions Triton itself says are READY on ``replica``."""
        index = self.client.post(f"{self.server_url(replica)}/v2/repository/index", json={}).json()
        return sorted(
            int(e["version"]) for e in index if e.get("name") == MODEL and e.get("state") == "READY"
        )

    def successes(self, replica: str) -> float:
        """Requests ``replica`` answered, from its own Prometheus counters."""
        text = self.client.get(self.specs[replica].urls["metrics"]).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("nv_inference_request_success{") and f'model="{MODEL}"' in line
        )

    def kill(self, name: str) -> None:
        import os
        import signal

        os.killpg(self.records[name].pid, signal.SIGKILL)

    def start(self, name: str) -> None:
        self.records[name] = start_and_wait(self.specs[name], self.workdir, name, timeout_s=180)


class Load:
    """Steady inference through the gateway from a few threads; counts every answer."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = f"{url}/v2/models/{MODEL}/infer"
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        body = v2_body(windows(count=2))
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json=body)
                    with self._lock:
                        self.statuses[response.status_code] += 1
                        if response.status_code != 200:
                            self.errors.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as error:
                    with self._lock:
                        self.statuses[0] += 1
                        self.errors.append(repr(error))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def total(self) -> int:
        with self._lock:
            return sum(self.statuses.values())

    def wait_for(self, more: int, timeout_s: float = 60) -> None:
        target = self.total() + more
        deadline = time.monotonic() + timeout_s
        while self.total() < target:
            assert time.monotonic() < deadline, f"load stalled at {self.total()} requests"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def replica_stack(drifted_run: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaStack]:
    workdir = tmp_path_factory.mktemp("replica-stack")
    store = ModelStore.open(f"file://{workdir / 'store'}")
    copy_versions(drifted_run.store, store, workdir, [1, 2])
    triton = free_port_block(6)
    settings = drifted_run.settings.model_copy(
        update={
            "var_dir": workdir / "var",
            "store_uri": store.uri,
            "triton_replicas": 2,
            "replica_port_stride": 1,
            "triton_http_port": triton,
            "triton_grpc_port": triton + 2,
            "triton_metrics_port": triton + 4,
            "agent_port": free_port_block(2),
            "gateway_replicas": 2,
            "gateway_http_port": free_port_block(3),  # the balancer's, then one per gateway replica
            "gateway_grpc_port": free_port_block(3),
            "load_balancer_stats_port": free_port(),
            "backend_timeout_s": 5.0,
            "routing_reload_interval_s": 0.2,
            "agent_interval_s": 0.2,
            "agent_unload_grace_s": 3.0,
            "agent_stale_after_s": 15.0,  # the default: agents starved by a busy machine must not vanish
            "drift_sample_rate": 1.0,
        }
    )
    specs = {
        spec.name: spec
        for spec in [
            *(s for s in model_server_services(settings) if s.name.startswith("triton")),
            *(s for s in agent_services(settings) if s.name.startswith("agent-triton")),
            *gateway_services(settings, ADMIN_TOKEN),
        ]
    }
    assert list(specs) == [
        "triton", "triton-1", "agent-triton", "agent-triton-1", "gateway", "gateway-1", "load-balancer",
    ]  # fmt: skip
    stack = ReplicaStack(settings, store, specs, {}, workdir)
    try:
        for name in specs:
            stack.start(name)
        yield stack
    finally:
        for record in reversed(list(stack.records.values())):
            stop_process(record, 30)
