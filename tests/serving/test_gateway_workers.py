"""A gateway replica as several worker processes on one port (SO_REUSEPORT): every worker serves,
/metrics sums them all, a killed worker is replaced under load, and SIGTERM stops them all."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flywheel.stack.process import ProcessRecord, is_running, stop_process
from serving.gateway.service import gateway_service
from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import ADMIN_TOKEN, GatewayStack, v2_body, windows
from tests.serving.replica_fixtures import Load
from tests.support import free_port, listeners, start_and_wait, wait_until


def workers_of(parent: int) -> list[int]:
    """PIDs whose parent is ``parent`` (the kernel's process table)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return sorted(found)


def served_by_worker(folder: Path) -> dict[int, float]:
    """Requests each worker answered, from its own file in the replica's multiprocess folder."""
    import json

    from prometheus_client.mmap_dict import MmapedDict

    counts: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "flywheel_gateway_requests_total":
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


def served(metrics: str) -> float:
    """Inference requests answered, summed over variants, from one /metrics page."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("flywheel_gateway_requests_total{") and f'model="{MODEL}"' in line
    )


class Workers:
    def __init__(self, stack: GatewayStack, workdir: Path, count: int = 2) -> None:
        self.settings = stack.settings.model_copy(
            update={
                "gateway_http_port": free_port(),
                "gateway_grpc_port": free_port(),
                "gateway_workers": count,
                "gateway_replica_name": "gateway-workers",
                "var_dir": workdir / "var",
            }
        )
        self.spec = gateway_service(self.settings, ADMIN_TOKEN, name="gateway-workers")
        self.workdir = workdir
        self.record: ProcessRecord | None = None

    @property
    def url(self) -> str:
        return self.settings.gateway_url

    def start(self) -> ProcessRecord:
        self.record = start_and_wait(self.spec, self.workdir, "gateway-workers", timeout_s=120)
        return self.record

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text


@pytest.fixture(scope="module")
def workers(canary_module: GatewayStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    replica = Workers(canary_module, tmp_path_factory.mktemp("gateway-workers"))
    record = replica.start()
    try:
        wait_until(lambda: len(workers_of(record.pid)) == 2, 30, "two workers")
        yield replica
    finally:
        if replica.record is not None:
            stop_process(replica.record, 30)


@pytest.fixture(scope="module")
def canary_module(gateway_stack: GatewayStack) -> GatewayStack:
    """Something deployed for the workers to serve (the shared stack's spec, in its store)."""
    if gateway_stack.admin("GET", f"/deployments/{MODEL}").status_code == 404:
        gateway_stack.deploy(1, "torchserve", "single")
    return gateway_stack


def test_every_worker_serves_and_metrics_sum_over_all_of_them(workers: Workers) -> None:
    assert workers.record is not None
    pids = workers_of(workers.record.pid)
    (folder,) = workers.settings.run_dir.glob("*-metrics")  # the replica's multiprocess folder
    before_by_worker = served_by_worker(folder)
    before = served(workers.metrics())
    body = v2_body(windows(seed=3))
    # A new connection per request: the kernel spreads connections, not requests, over workers.
    for _ in range(80):
        with httpx.Client(timeout=30) as client:
            response = client.post(f"{workers.url}/v2/models/{MODEL}/infer", json=body)
            assert response.status_code == 200, response.text
    after_by_worker = served_by_worker(folder)
    answered = {pid: after_by_worker.get(pid, 0.0) - before_by_worker.get(pid, 0.0) for pid in pids}
    assert all(count > 0 for count in answered.values()) and sum(answered.values()) == 80, answered
    # Any worker's /metrics is the sum over all: exactly the 80 answers, whichever worker counted them.
    assert [served(workers.metrics()) - before for _ in range(5)] == [80.0] * 5
    gauge = "flywheel_gateway_routing_spec_revision{"
    revisions = [
        line
        for line in workers.metrics().splitlines()
        if line.startswith(gauge) and f'model="{MODEL}"' in line
    ]
    # One line for the replica (the oldest revision a live worker serves), not one per worker.
    assert len(revisions) == 1 and "pid=" not in revisions[0], revisions


def test_a_killed_worker_is_replaced_under_load_and_its_counts_are_kept(workers: Workers) -> None:
    assert workers.record is not None
    parent = workers.record.pid
    victim, survivor = workers_of(parent)
    with Load(workers.url, threads=4) as load:
        load.wait_for(100)
        before_kill = served(workers.metrics())
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(workers_of(parent)) == 2 and victim not in workers_of(parent), 60, "a new worker"
        )
        load.wait_for(200)
    replacement = next(pid for pid in workers_of(parent) if pid != survivor)
    assert is_running(workers.record) and survivor in workers_of(parent) and replacement != victim
    # Only requests in flight on the killed worker's connections can fail: one per client thread.
    failed = load.total() - load.statuses[200]
    assert failed <= 4, load.errors
    # The dead worker's counts stay in the sum: the counter never goes backwards.
    assert served(workers.metrics()) >= before_kill + 200 - failed


def test_sigterm_stops_every_worker_and_frees_the_ports(workers: Workers) -> None:
    assert workers.record is not None
    record = workers.record
    pids = workers_of(record.pid)
    # The parent alone: it must pass the signal on (stop_process would signal the whole group).
    os.kill(record.pid, signal.SIGTERM)
    wait_until(lambda: not is_running(record), 30, "the parent to exit")
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids), "the parent waited for its workers"
    workers.record = None
    ports = {workers.settings.gateway_http_port, workers.settings.gateway_grpc_port}
    assert not listeners(ports)


def test_workers_that_cannot_bind_stop_the_replica_with_an_error(
    canary_module: GatewayStack, tmp_path: Path
) -> None:
    """A port held by another process (without SO_REUSEPORT): each worker dies at start, and the
    parent gives up after three quick deaths instead of restarting them forever."""
    replica = Workers(canary_module, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", replica.settings.gateway_http_port))
        taken.listen()
        log = tmp_path / "gateway.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "serving.gateway"],
                env={**os.environ, **replica.spec.env},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = process.wait(timeout=240)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 1, text[-3000:]
    assert "times in a row" in text and "address already in use" in text.lower()
    assert not listeners({replica.settings.gateway_grpc_port}), "no worker is left behind"
