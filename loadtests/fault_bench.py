"""Faults under load, measured: what clients see while a server, the gateway or a launcher dies.

The harness runs an open-loop load (requests leave on schedule whether or not earlier ones
returned) against a running ``flywheel up`` stack, injects one fault at a time, repairs it the
way an operator would (``flywheel up``, through the same supervisor), and reports per case:
requests sent while the case lasted, how many failed and with what, and the seconds from the
fault until the thing that broke serves again. A measurement for ``docs/benchmarks.md``, never a
timed test: the numbers depend on this machine's load.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from flywheel.stack.process import ProcessRecord


@dataclass
class OpenLoopLoad:
    """``rate`` routed requests per second from a background thread, each outcome recorded."""

    url: str
    body: bytes
    rate: float
    #: (sent at, status, seconds to the answer); status 0 = no answer (refused, reset, timed out)
    outcomes: list[tuple[float, int, float]] = field(default_factory=list)
    in_flight: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> OpenLoopLoad:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=2048), timeout=timeout
        ) as session:
            pending: set[asyncio.Task[None]] = set()
            start, index = time.monotonic(), 0
            while not self._stop.is_set():
                scheduled = start + index / self.rate
                delay = scheduled - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self._one(session))
                pending.add(task)
                task.add_done_callback(pending.discard)
                index += 1
            await asyncio.gather(*pending, return_exceptions=True)

    async def _one(self, session: aiohttp.ClientSession) -> None:
        sent = time.monotonic()
        self.in_flight += 1
        try:
            async with session.post(
                self.url, data=self.body, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        finally:
            self.in_flight -= 1
        self.outcomes.append((sent, status, time.monotonic() - sent))

    def between(self, start: float, end: float) -> list[tuple[int, float]]:
        """(status, latency) of the requests sent in [start, end] (wait for them first: settle)."""
        return [(status, took) for sent, status, took in list(self.outcomes) if start <= sent <= end]

    def settle(self, timeout_s: float = 45.0) -> None:
        """Until every request sent so far has its answer (or the client's own timeout)."""
        wait_until(lambda: self.in_flight <= 0, timeout_s)


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> float | None:
    """Seconds until ``condition`` held, or None at the deadline."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(interval_s)
    return None


def kill_group(record: ProcessRecord) -> None:
    os.killpg(record.pid, signal.SIGKILL)


def kill_pid(record: ProcessRecord) -> None:
    os.kill(record.pid, signal.SIGKILL)


def run_case(
    load: OpenLoopLoad,
    name: str,
    fault: Callable[[], None],
    repair: Callable[[], None],
    recovered: Callable[[], bool],
    timeout_s: float = 180.0,
    settle_s: float = 3.0,
) -> dict[str, Any]:
    """Inject ``fault``, ``repair``, wait until ``recovered``; count what clients saw meanwhile."""
    began = time.monotonic()
    fault()
    repair()
    repaired = time.monotonic() - began
    came_back = wait_until(recovered, timeout_s)
    took = None if came_back is None else time.monotonic() - began
    time.sleep(settle_s)  # a few more seconds of load after recovery: does anything still fail?
    ended = time.monotonic()
    load.settle()  # requests still in flight belong to this case: wait for their answers
    answers = load.between(began, ended)
    failures = collections.Counter(status for status, _ in answers if status != 200)
    latencies = sorted(took for _, took in answers)
    return {
        "case": name,
        "requests": len(answers),
        "failed": sum(failures.values()),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "failures": {
            ("no answer" if status == 0 else str(status)): count for status, count in failures.items()
        },
        "up_s": round(repaired, 1),  # the repair itself (`flywheel up` restarting what died)
        "recovered_s": None if took is None else round(took, 1),  # fault -> serving again
    }
