"""The gateway benchmark: client -> Triton directly, through the gateway, and through nginx.

Same request (one 10x8 FP32 window as KServe v2 JSON), same client, same run, one target at a
time. Two loads per target:

- a fixed rate (open loop: requests leave on schedule whether or not earlier ones returned, and
  latency counts from the scheduled send time, so a stalled target cannot hide its queueing);
- saturation (closed loop: ``concurrency`` workers send back to back).

The gateway's CPU time per request comes from ``/proc/<pid>/stat`` (user + system ticks) over
the fixed-rate and saturation phases. nginx is set up the way people hand-roll a canary:
``split_clients`` on the request id picks a version, and ``proxy_pass`` rewrites the path.

The client is aiohttp (keep-alive pool), not httpx: on a 2-core machine the load generator
shares the CPU with what it measures, and aiohttp's client costs less per request.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from flywheel.stack.process import ProcessRecord, ServiceSpec, http_probe, start_process, stop_process

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    pid: int | None = None  # the process whose CPU time is charged per request
    #: More gateway process groups charged with it (every replica behind a balancer).
    more_pids: tuple[int, ...] = ()
    #: The balancer in front, whose CPU is reported on its own line.
    balancer_pid: int | None = None


def infer_body(signature: Any, rows: int = 1, seed: int = 0) -> bytes:
    """A v2 JSON infer body of example inputs built from a manifest's ``signature``."""
    from serving.protocols.examples import example_inputs, v2_request

    specs = [spec.protocol_view() for spec in signature.inputs]
    arrays = example_inputs(specs, rows, seed)
    return orjson.dumps(v2_request(arrays, {spec["name"]: spec["datatype"] for spec in specs}))


def cpu_seconds(group: int) -> float:
    """User + system CPU of every live process in a process group (nginx's workers included)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked
        if int(fields[2]) == group:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLOCK_TICKS


def summarise(latencies: list[float], errors: int, elapsed: float) -> dict[str, Any]:
    milliseconds = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return {
        "requests": len(latencies) + errors,
        "errors": errors,
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 3),
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 3),
        "throughput_rps": round(len(latencies) / elapsed, 1),
    }


async def _send(session: aiohttp.ClientSession, url: str, body: bytes) -> bool:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        await response.read()
        return response.status == 200


async def fixed_rate(url: str, body: bytes, rate: float, duration_s: float) -> dict[str, Any]:
    """Open loop at ``rate`` requests per second."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(200):  # warm-up: connections, lazy paths, the server's own caches
            await _send(session, url, body)
        total = int(rate * duration_s)
        start = time.perf_counter()

        async def one(index: int) -> None:
            nonlocal errors
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                ok = await _send(session, url, body)
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - scheduled)
            else:
                errors += 1

        await asyncio.gather(*(one(index) for index in range(total)))
        elapsed = time.perf_counter() - start
    return summarise(latencies, errors, elapsed)


async def saturation(url: str, body: bytes, concurrency: int, requests: int) -> dict[str, Any]:
    """Closed loop: ``concurrency`` workers back to back."""
    latencies: list[float] = []
    errors = 0
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(50):
            await _send(session, url, body)

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                began = time.perf_counter()
                try:
                    ok = await _send(session, url, body)
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return summarise(latencies, errors, elapsed)


def measure(
    target: Target, body: bytes, rate: float, duration_s: float, concurrency: int, requests: int
) -> dict[str, Any]:
    groups = (target.pid, *target.more_pids) if target.pid else ()
    cpu_before = sum(cpu_seconds(group) for group in groups)
    balancer_before = cpu_seconds(target.balancer_pid) if target.balancer_pid else 0.0
    result: dict[str, Any] = {
        "fixed_rate": asyncio.run(fixed_rate(target.url, body, rate, duration_s)),
        "saturation": asyncio.run(saturation(target.url, body, concurrency, requests)),
    }
    served = result["fixed_rate"]["requests"] + result["saturation"]["requests"] + 250  # + warm-ups
    if groups:
        # Summed over every gateway replica: the gateways' work per request, however it spreads.
        spent = sum(cpu_seconds(group) for group in groups) - cpu_before
        result["cpu_us_per_request"] = round(spent / served * 1e6, 1)
    if target.balancer_pid:
        spent = cpu_seconds(target.balancer_pid) - balancer_before
        result["balancer_cpu_us_per_request"] = round(spent / served * 1e6, 1)
    return result


def nginx_config(workdir: Path, port: int, upstream: str, model: str, split: dict[int, float]) -> Path:
    """A weighted canary in nginx: ``split_clients`` picks the version, the path is rewritten."""
    # Run as root, nginx's workers drop to an unprivileged user: let them use the scratch folders.
    workdir.chmod(0o755)
    for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
        (workdir / folder).chmod(0o777)
    versions = list(split.items())
    buckets = "\n".join(f"        {percent:g}% {version};" for version, percent in versions[:-1])
    config = f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    upstream backend {{ server {upstream}; keepalive 64; }}
    split_clients "${{request_id}}" $flywheel_version {{
{buckets}
        * {versions[-1][0]};
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /healthz {{ return 200 "ok"; }}
        location = /v2/models/{model}/infer {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://backend/v2/models/{model}/versions/$flywheel_version/infer;
        }}
    }}
}}
"""
    path = workdir / "nginx.conf"
    path.write_text(config)
    return path


def start_peer(spec: ServiceSpec, workdir: Path, error_log: Path | None = None) -> ProcessRecord:
    """Start one of the bench's own servers and poll its health URL (20 s); fail with its log."""
    record = start_process(spec, workdir / "run", workdir / "log")
    deadline = time.monotonic() + 20
    while spec.probe() is not None:
        if time.monotonic() > deadline:
            stop_process(record, 5)
            log = (error_log or Path(record.log)).read_text()[-2000:]
            raise RuntimeError(f"{spec.name} did not start: {log}")
        time.sleep(0.05)
    return record


def start_nginx(workdir: Path, config: Path, port: int) -> ProcessRecord:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    spec = ServiceSpec(
        name="bench-nginx",
        argv=[binary, "-c", str(config), "-p", str(workdir), "-e", str(workdir / "error.log")],
        probe=http_probe(f"http://127.0.0.1:{port}/healthz"),
    )
    return start_peer(spec, workdir, workdir / "error.log")


def haproxy_config(workdir: Path, port: int, upstream: str, model: str, split: dict[int, float]) -> Path:
    """The same weighted canary in HAProxy: a random draw per request picks a backend, and each
    backend rewrites the path to its version (keep-alive to Triton, like nginx's pool)."""
    versions = list(split.items())
    total = sum(percent for _, percent in versions)
    rules, backends, upper = [], [], 0.0
    for index, (version, percent) in enumerate(versions):
        upper += percent / total * 10000
        name = f"v{version}_{index}"
        if index < len(versions) - 1:
            rules.append(f"  use_backend {name} if {{ var(txn.draw) -m int lt {round(upper)} }}")
        else:
            rules.append(f"  default_backend {name}")
        backends.append(
            f"backend {name}\n"
            f"  http-request set-path /v2/models/{model}/versions/{version}/infer\n"
            f"  server triton {upstream}\n"
        )
    config = f"""global
  maxconn 4096
  log stderr format short local0 warning
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 30s
frontend canary
  bind 127.0.0.1:{port}
  http-request return status 200 content-type text/plain string ok if {{ path /healthz }}
  http-request set-var(txn.draw) rand(10000)
{chr(10).join(rules)}
{chr(10).join(backends)}"""
    path = workdir / "haproxy.cfg"
    path.write_text(config)
    return path


def start_haproxy(workdir: Path, config: Path, port: int) -> ProcessRecord:
    from serving.gateway.balancer import haproxy_binary

    spec = ServiceSpec(
        name="bench-haproxy",
        argv=[haproxy_binary(), "-db", "-f", str(config)],
        probe=http_probe(f"http://127.0.0.1:{port}/healthz"),
    )
    return start_peer(spec, workdir)


def start_bare_proxy(workdir: Path, port: int, upstream: str) -> ProcessRecord:
    """``loadtests.bare_proxy``: the HTTP stack alone, to split the gateway's cost."""
    import sys

    spec = ServiceSpec(
        name="bench-bare-proxy",
        argv=[sys.executable, "-m", "loadtests.bare_proxy", str(port), upstream],
        probe=http_probe(f"http://127.0.0.1:{port}/healthz"),
        cwd=Path(__file__).resolve().parent.parent,
    )
    return start_peer(spec, workdir)


def replica_choice_cost(
    replica_counts: tuple[int, ...] = (1, 2, 4, 16, 64), picks: int = 20_000
) -> dict[int, float]:
    """Microseconds the gateway spends choosing a server replica per request, by replica count.

    The same code a request runs (``ReplicaSet._pick``: two of the version's ready replicas at
    random, the less busy one wins), timed in-process, so the end-to-end numbers' noise on a shared
    machine does not hide how this part grows with the replicas.
    """
    from serving.agent.report import AgentReport, VersionState
    from serving.backends.replicas import ReplicaSet

    costs = {}
    for count in replica_counts:
        replica_set = ReplicaSet("bench")
        reports = [
            AgentReport(
                agent=f"r{index}",
                kind="bench",
                replica=index,
                endpoints={"http": f"http://127.0.0.1:{10000 + index}"},
                server_up=True,
                versions=[VersionState(model="m", version=1, phase="ready")],
            )
            for index in range(count)
        ]
        replica_set.update(reports, lambda endpoints: None)  # type: ignore[arg-type, return-value]
        started = time.perf_counter()
        for _ in range(picks):
            replica_set._pick("m", 1, set())
        costs[count] = round((time.perf_counter() - started) / picks * 1e6, 2)
    return costs
