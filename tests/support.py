"""Helpers shared by tests: free ports, health polling with a deadline, process handling."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from flywheel.stack.process import ProcessRecord, ServiceSpec, is_running, start_process, stop_process, tail
from flywheel.stack.sockets import ephemeral_port_range, listeners
from flywheel.stack.sockets import free_port as free_port  # re-exported for the tests

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_stack_ports() -> dict[str, int]:
    """A free port for every ``*_port`` setting, so a private stack collides with nothing."""
    from flywheel.settings import FlywheelSettings
    from flywheel.stack.seaweedfs import ADMIN_GRPC_OFFSET

    ports = {name: free_port() for name in FlywheelSettings.model_fields if name.endswith("_port")}
    # SeaweedFS's admin takes its HTTP port + 10000 as well: keep both free and, like every other
    # port here, below the ephemeral range (outgoing connections take ports from that range).
    low, _ = ephemeral_port_range()
    # Derived ports must stay outside the ephemeral range too: below it, or above it.
    below = low - 1 - ADMIN_GRPC_OFFSET if low - 1024 >= 1000 else 65535 - ADMIN_GRPC_OFFSET
    while True:
        admin = free_port(below=below)
        if not listeners({admin + ADMIN_GRPC_OFFSET}) and admin + ADMIN_GRPC_OFFSET not in ports.values():
            ports["seaweedfs_admin_port"] = admin
            return ports


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout_s``. Never a bare sleep."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.HTTPError:
        return False


def start_and_wait(
    spec: ServiceSpec, workdir: Path, health_url: str, timeout_s: float = 120
) -> ProcessRecord:
    """Start a real server process and poll its health URL; on failure show its log."""
    if spec.prepare:
        spec.prepare()
    record = start_process(spec, workdir / "run", workdir / "log")
    try:
        wait_until(
            lambda: spec.probe() is None or not is_running(record), timeout_s, f"{spec.name} at {health_url}"
        )
        if not is_running(record):
            raise RuntimeError(f"{spec.name} exited during start:\n{tail(Path(record.log), 60)}")
    except BaseException:
        stop_process(record, 10)
        raise
    return record


def wildcard_listeners(process_groups: set[int]) -> list[tuple[int, int]]:
    """(pid, port) of every TCP socket listening on all interfaces (0.0.0.0 or ::) that a process in
    one of ``process_groups`` holds (the kernel's socket table, as the supervisor reads it)."""
    return [(held.pid, held.port) for held in listeners() if held.wildcard and held.pgid in process_groups]
