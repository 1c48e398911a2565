"""The local stack supervisor behind ``flywheel up | down | status``.

``up`` starts each service in order, waits for its health probe with a deadline, and runs its
after-start hook. A service that exits or stays unhealthy is reported with the tail of its log;
everything this ``up`` started is then stopped again and the call fails. Services already running
(from an earlier ``up``) are left alone, so ``up`` is idempotent. ``down`` stops, in reverse
order, every service that has a record under ``var/run``.

Each service is its whole process group: a server whose recorded process died while its children
live on (``orphaned``) is stopped entirely before ``up`` starts it again, and ``down`` stops the
children too. Before a start, the service's ports are checked in the kernel's socket table: a port
held by a process outside the stack fails ``up`` with that process named, instead of a health probe
being answered by a server we do not own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from flywheel.stack.process import (
    ProcessRecord,
    ServiceSpec,
    group_members,
    is_running,
    orphans,
    start_process,
    stop_process,
    tail,
)
from flywheel.stack.sockets import listeners


class ServiceStartError(RuntimeError):
    """A service that did not become healthy; the message carries its log tail."""

    def __init__(self, name: str, reason: str, log_tail: str) -> None:
        self.name, self.reason, self.log_tail = name, reason, log_tail
        super().__init__(f"{name} failed to start: {reason}\n--- last lines of its log ---\n{log_tail}")


@dataclass
class ServiceStatus:
    name: str
    state: str  # running | unhealthy | orphaned | stopped | dead
    pid: int | None
    urls: dict[str, str]
    detail: str | None
    log: str | None

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


#: Called with (service name, event) as services start or stop, for progress display.
StackEvent = Callable[[str, str], None]


def service_ports(spec: ServiceSpec) -> set[int]:
    """The TCP ports a service announces in its URLs (``http://host:port/...`` or ``host:port``)."""
    ports = set()
    for url in spec.urls.values():
        parsed = urlsplit(url if "://" in url else f"tcp://{url}")
        if parsed.port is not None:
            ports.add(parsed.port)
    return ports


def _command_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120] or "?"


class StackSupervisor:
    """Starts, inspects and stops an ordered list of services."""

    def __init__(
        self,
        services: Sequence[ServiceSpec],
        run_dir: Path,
        log_dir: Path,
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 20.0,
        unhealthy_grace_s: float = 15.0,
    ) -> None:
        self.services = list(services)
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.unhealthy_grace_s = unhealthy_grace_s

    def _record(self, name: str) -> ProcessRecord | None:
        path = self.run_dir / f"{name}.json"
        return ProcessRecord.from_file(path) if path.exists() else None

    def _stack_groups(self) -> set[int]:
        groups = set()
        for spec in self.services:
            record = self._record(spec.name)
            if record is not None and group_members(record):
                groups.add(record.pid)
        return groups

    def _check_ports_free(self, spec: ServiceSpec) -> None:
        """Refuse to start when a process outside the stack holds one of the service's ports."""
        ours = self._stack_groups()
        foreign = [held for held in listeners(service_ports(spec)) if held.pgid not in ours]
        if foreign:
            held = foreign[0]
            holder = (
                f"PID {held.pid} ({_command_of(held.pid)})"
                if held.pid > 0
                else "a process this user cannot inspect"
            )
            raise ServiceStartError(
                spec.name,
                f"port {held.port} is already in use (Address already in use) by {holder}, which this "
                "stack did not start; stop it or choose another port",
                "(not started)",
            )

    def _wait_healthy(self, spec: ServiceSpec, record: ProcessRecord) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        reason = "no answer yet"
        while time.monotonic() < deadline:
            if not is_running(record):
                raise ServiceStartError(spec.name, "the process exited", tail(Path(record.log)))
            probe_result = spec.probe()
            if probe_result is None:
                return
            reason = probe_result
            time.sleep(0.2)
        raise ServiceStartError(
            spec.name, f"not healthy after {self.start_timeout_s:.0f} s ({reason})", tail(Path(record.log))
        )

    def up(self, on_event: StackEvent | None = None) -> list[ServiceStatus]:
        notify = on_event or (lambda name, event: None)
        started: list[ProcessRecord] = []
        try:
            for spec in self.services:
                existing = self._record(spec.name)
                if existing and is_running(existing) and self._healthy_within(spec, existing):
                    notify(spec.name, "already running")
                    continue
                if existing:
                    # A stale record, a process alive but unhealthy, or children left by a dead
                    # launcher: stop the whole group, then start afresh.
                    if stop_process(existing, self.stop_timeout_s) or orphans(existing):
                        notify(spec.name, "stopped what was left of it")
                    survivors = group_members(existing)
                    if survivors:
                        # Keep the record: it is what lets a later `down` find them again.
                        raise ServiceStartError(
                            spec.name,
                            f"processes of its old group survive SIGKILL: PIDs {survivors} "
                            "(uninterruptible I/O?); not starting a second copy beside them",
                            tail(Path(existing.log)),
                        )
                    (self.run_dir / f"{spec.name}.json").unlink(missing_ok=True)
                self._check_ports_free(spec)
                notify(spec.name, "starting")
                if spec.prepare:
                    spec.prepare()
                record = start_process(spec, self.run_dir, self.log_dir)
                started.append(record)
                self._wait_healthy(spec, record)
                if spec.after_start:
                    spec.after_start()
                notify(spec.name, "healthy")
        except BaseException:
            for record in reversed(started):
                stop_process(record, self.stop_timeout_s)
                (self.run_dir / f"{record.name}.json").unlink(missing_ok=True)
            raise
        return self.status()

    def _healthy_within(self, spec: ServiceSpec, record: ProcessRecord) -> bool:
        """Whether a running service answers its probe within ``unhealthy_grace_s``: one slow answer on a
        busy machine must not make `up` restart a healthy service."""
        deadline = time.monotonic() + self.unhealthy_grace_s
        while is_running(record):
            if spec.probe() is None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(1.0)
        return False

    def down(self, on_event: StackEvent | None = None) -> list[str]:
        """Stop every recorded service, newest first; returns the names that were running."""
        notify = on_event or (lambda name, event: None)
        names = [spec.name for spec in self.services]
        # Records of services no longer in the spec list are stopped too: nothing is left behind.
        if self.run_dir.exists():
            names += sorted(path.stem for path in self.run_dir.glob("*.json") if path.stem not in names)
        stopped: list[str] = []
        for name in reversed(names):
            record = self._record(name)
            if record is None:
                continue
            if group_members(record):
                notify(name, "stopping")
                killed = stop_process(record, self.stop_timeout_s)
                notify(name, "killed" if killed else "stopped")
                stopped.append(name)
            (self.run_dir / f"{name}.json").unlink(missing_ok=True)
        return stopped

    def status(self) -> list[ServiceStatus]:
        statuses = []
        for spec in self.services:
            record = self._record(spec.name)
            if record is None:
                statuses.append(ServiceStatus(spec.name, "stopped", None, spec.urls, None, None))
                continue
            if not is_running(record):
                left = orphans(record)
                if left:
                    detail = f"process exited; its children still run: PIDs {', '.join(map(str, left))}"
                    statuses.append(
                        ServiceStatus(spec.name, "orphaned", record.pid, spec.urls, detail, record.log)
                    )
                else:
                    statuses.append(
                        ServiceStatus(spec.name, "dead", record.pid, spec.urls, "process exited", record.log)
                    )
                continue
            problem = spec.probe()
            state = "running" if problem is None else "unhealthy"
            statuses.append(ServiceStatus(spec.name, state, record.pid, spec.urls, problem, record.log))
        return statuses
