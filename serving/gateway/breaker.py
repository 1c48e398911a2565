"""Per-variant circuit breakers: route around a server that just failed, probe it one at a time.

A variant whose server was unreachable, timed out or lost its version is *open* for
``cool_down_s``: routed requests try the spec's other variants first. After the cool-down one
request at a time is let through as a trial (*half-open*); its success closes the breaker, its
failure opens it again. Without this, every request routed to a server that accepts connections
but does not answer (shutting down, or loading after a restart) would wait out its time budget
before failing over, and a load of 150 req/s piles up thousands of such waits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

Key = tuple[str, str]  # (model, variant name)


@dataclass
class _Open:
    opened_at: float
    until: float
    trial_in_flight: bool = False


class CircuitBreakers:
    def __init__(self, cool_down_s: float = 1.0) -> None:
        self.cool_down_s = cool_down_s
        self._open: dict[Key, _Open] = {}

    @property
    def any_open(self) -> bool:
        """False in the common case: the request path then skips every per-variant look-up."""
        return bool(self._open)

    def available(self, key: Key) -> bool:
        """Closed, or half-open with no trial running: worth trying before the others."""
        state = self._open.get(key)
        return state is None or (time.monotonic() >= state.until and not state.trial_in_flight)

    def begin(self, key: Key) -> bool:
        """An attempt starts; True when it is the half-open trial (end it with success/failure)."""
        if not self._open:
            return False
        state = self._open.get(key)
        if state is None or time.monotonic() < state.until or state.trial_in_flight:
            return False
        state.trial_in_flight = True
        return True

    def success(self, key: Key, started: float) -> None:
        """An answer from an attempt begun at ``started`` (monotonic). Only one begun after the
        breaker opened closes it: requests in flight when a server starts draining still finish
        well, and must not declare it healthy."""
        if not self._open:
            return
        state = self._open.get(key)
        if state is not None and started >= state.opened_at:
            del self._open[key]

    def failure(self, key: Key) -> None:
        now = time.monotonic()
        self._open[key] = _Open(now, now + self.cool_down_s)

    def end_trial(self, key: Key) -> None:
        """A trial that ended in neither (the request itself was refused): let another try."""
        state = self._open.get(key)
        if state is not None:
            state.trial_in_flight = False

    def open_variants(self) -> list[Key]:
        return [key for key, state in self._open.items() if time.monotonic() < state.until]
