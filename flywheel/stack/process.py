"""Managed processes: start detached, record by PID, check health, stop by PID.

A service is started in its own session (process group), with stdout and stderr appended to
``var/log/<name>.log``. Its PID (which is also its process-group id) and kernel start time go to
``var/run/<name>.json``; the start time guards against a recycled PID being mistaken for ours.

The supervisor owns the whole process *group*, not just the recorded PID: a server whose launcher
died (TorchServe's Python launcher SIGKILLed while its Java frontend lives on) still has members
in the group, and those are found, reported and stopped. The kernel never hands out a PID that is
still some live group's id, so a group whose leader's PID now belongs to another process is gone.
Stopping sends SIGTERM to the group, waits, then SIGKILLs what is left. Nothing is ever found or
killed by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

#: A health probe: returns None when healthy, else a short reason.
HealthProbe = Callable[[], str | None]


def http_probe(url: str, timeout_s: float = 2.0, expect_status: int | None = None) -> HealthProbe:
    """Healthy when ``GET url`` answers 2xx (or exactly ``expect_status``)."""

    def probe() -> str | None:
        try:
            response = httpx.get(url, timeout=timeout_s)
        except httpx.HTTPError as error:
            return f"{url}: {type(error).__name__}"
        healthy = response.status_code == expect_status if expect_status else response.is_success
        return None if healthy else f"{url}: HTTP {response.status_code}"

    return probe


@dataclass
class ServiceSpec:
    """How to run one service of the local stack."""

    name: str
    argv: list[str]
    probe: HealthProbe
    urls: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    #: Runs before start: write configuration files, create folders.
    prepare: Callable[[], None] | None = None
    #: Runs once healthy: create buckets, register defaults.
    after_start: Callable[[], None] | None = None


@dataclass(frozen=True)
class ProcessRecord:
    """What ``var/run/<name>.json`` holds about a started service."""

    name: str
    pid: int
    start_ticks: int
    log: str
    argv: list[str]

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)

    @classmethod
    def from_file(cls, path: Path) -> ProcessRecord:
        return cls(**json.loads(path.read_text()))


def _stat_fields(raw: str) -> list[str]:
    # The command name (field 2) may contain spaces or parentheses: split after its closing ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of ``pid`` from /proc, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = _stat_fields(raw)
    return fields[0], int(fields[19])


def is_running(record: ProcessRecord) -> bool:
    """True while the recorded process exists, is not a zombie, and is the same process."""
    stat = _proc_stat(record.pid)
    return stat is not None and stat[0] not in {"Z", "X"} and stat[1] == record.start_ticks


def _pid_recycled(record: ProcessRecord) -> bool:
    stat = _proc_stat(record.pid)
    return stat is not None and stat[1] != record.start_ticks


def group_members(record: ProcessRecord) -> list[int]:
    """Live PIDs of the recorded process's group, the leader included, children it left behind too."""
    if _pid_recycled(record):
        return []  # the PID went to another process, so the group it named has no member left
    return [pid for pid in _group_pids(record.pid) if (_proc_stat(pid) or ("", 0))[1] >= record.start_ticks]


def orphans(record: ProcessRecord) -> list[int]:
    """Members of the group still alive although the recorded process itself exited."""
    return [] if is_running(record) else group_members(record)


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start_process(spec: ServiceSpec, run_dir: Path, log_dir: Path) -> ProcessRecord:
    """Start ``spec`` detached in its own session; record it; return the record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{spec.name}.log"
    environment = {**os.environ, **spec.env}
    with log_path.open("ab") as log_file:
        log_file.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {spec.name}\n".encode())
        log_file.flush()
        process = subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stat = _proc_stat(process.pid)
    record = ProcessRecord(
        name=spec.name,
        pid=process.pid,
        start_ticks=stat[1] if stat else 0,
        log=str(log_path),
        argv=spec.argv,
    )
    (run_dir / f"{spec.name}.json").write_text(record.to_json())
    return record


def stop_process(record: ProcessRecord, timeout_s: float) -> bool:
    """SIGTERM the process group, wait up to ``timeout_s``, then SIGKILL. True if it had to be killed.

    The group is stopped even when the recorded process already exited: what it spawned is ours.
    """
    if not group_members(record):
        return False
    try:
        os.killpg(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not group_members(record):
            return False
        time.sleep(0.1)
    try:
        os.killpg(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    kill_deadline = time.monotonic() + 5
    while time.monotonic() < kill_deadline and group_members(record):
        time.sleep(0.05)
    return True


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields((entry / "stat").read_text())
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            pids.append(int(entry.name))
    return pids
