"""Several worker processes behind one gateway replica's ports (SO_REUSEPORT).

With ``FLYWHEEL_GATEWAY_WORKERS`` above 1, ``python -m serving.gateway`` becomes a small parent:
it starts that many workers, restarts one that dies, and stops them all on SIGTERM. Each worker
is a whole gateway (:func:`serving.gateway.app.serve`) bound to the replica's REST and gRPC ports
with SO_REUSEPORT, and the kernel spreads new connections over them, so throughput scales with
cores instead of stopping at one event loop.

What workers share follows the rules for gateway replicas (docs/operations.md): routing specs,
the feedback ledger, bandit arms, the retrain outbox and captures live in the store; feedback
that reaches another worker is credited from the answer's attribution token. Metrics use
prometheus-client's multiprocess mode: every worker writes its values to files in one folder and
any worker's ``/metrics`` sums them, so one scrape of the shared port sees the whole replica
(and a worker's restart keeps its counts: its files stay).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from flywheel.settings import FlywheelSettings

log = logging.getLogger(__name__)
#: prometheus-client's own switch, read when it is imported: set for the workers only.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: A worker that dies this soon after its start, this many times in a row, stops the replica.
QUICK_DEATH_S, QUICK_DEATHS = 30.0, 3
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}


def workers_registry() -> CollectorRegistry | None:
    """The sum over this replica's workers for /metrics, or None when not running as a worker."""
    folder = os.environ.get(MULTIPROCESS_ENV)
    if not folder:
        return None
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)
    return registry


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float


def _unblock_signals() -> None:
    # The parent blocks the signals it waits for; a worker must receive them again.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _threads() -> int:
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1


def start_worker(settings: FlywheelSettings, index: int, metrics_folder: Path) -> Worker:
    env = {
        **os.environ,
        MULTIPROCESS_ENV: str(metrics_folder),
        # Captures are keyed by replica name: two workers must never write the same object.
        "FLYWHEEL_GATEWAY_REPLICA_NAME": f"{settings.gateway_replica_name}-w{index}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.gateway", "--worker", str(index)],
        env=env,
        preexec_fn=_unblock_signals,  # safe: the parent runs no other thread
    )
    log.info("gateway worker %d started (pid %d)", index, process.pid)
    return Worker(index, process, time.monotonic())


def stop_workers(workers: list[Worker], grace_s: float) -> None:
    """SIGTERM (they finish what is in flight), then SIGKILL for any still there after ``grace_s``."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("gateway worker %d did not stop in %.0f s; killing it", worker.index, grace_s)
            worker.process.kill()
            worker.process.wait()


def run_workers(settings: FlywheelSettings, grace_s: float = 20.0) -> int:
    """Start ``settings.gateway_workers`` workers and keep them running until SIGTERM or SIGINT.

    Exit status 1 when a worker keeps dying right after its start (a port taken, a broken
    setting): restarting it forever would hide the fault from the supervisor.
    """
    from prometheus_client import multiprocess

    folder = settings.run_dir / f"{settings.gateway_replica_name}-metrics"
    # A new replica's counters start at zero: files of an earlier run would be summed in.
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, mode=0o700)
    # Blocked, then waited for: with no other thread (checked: imports stay light here), a signal
    # arriving while workers start or stop waits for sigtimedwait instead of killing this process.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    if _threads() > 1:
        log.warning("the workers' parent runs %d threads: a signal may reach one of them", _threads())
    workers = {index: start_worker(settings, index, folder) for index in range(settings.gateway_workers)}
    quick_deaths = 0
    try:
        while True:
            received = signal.sigtimedwait(_SIGNALS, 5.0)
            if received is not None and received.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("gateway stopping its %d workers", len(workers))
                return 0
            for index, worker in list(workers.items()):
                code = worker.process.poll()
                if code is None:
                    continue
                multiprocess.mark_process_dead(worker.process.pid, path=str(folder))
                lived = time.monotonic() - worker.started
                quick_deaths = quick_deaths + 1 if lived < QUICK_DEATH_S else 0
                if quick_deaths >= QUICK_DEATHS:
                    log.error(
                        "gateway worker %d exited with %s %.1f s after its start, %d times in a row; "
                        "stopping (see the lines above for why)",
                        index, code, lived, quick_deaths,
                    )  # fmt: skip
                    return 1
                log.warning(
                    "gateway worker %d exited with %s after %.0f s; restarting it", index, code, lived
                )
                workers[index] = start_worker(settings, index, folder)
    finally:
        stop_workers(list(workers.values()), grace_s)
