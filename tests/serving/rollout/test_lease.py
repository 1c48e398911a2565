"""The per-model lease: one holder at a time, renewals, expiry, release; on both store backends."""

from __future__ import annotations

import time

from model_store import ModelStore
from serving.rollout.lease import Lease


def test_one_holder_at_a_time_until_expiry(store: ModelStore) -> None:
    first, second = Lease(store.storage, "a", ttl_s=0.5), Lease(store.storage, "b", ttl_s=0.5)
    assert first.acquire("m") and first.acquire("m"), "renewal by the holder"
    assert not second.acquire("m") and first.holder_of("m") == "a"
    time.sleep(0.6)  # the TTL itself is what is under test here
    assert second.acquire("m") and not first.acquire("m")
    second.release("m")
    assert first.holder_of("m") is None and first.acquire("m")
