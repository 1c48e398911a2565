"""Attribution tokens, the one-reward ledger and the bandit arms' compare-and-swap, on a real store."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from model_store.backends.file import FileStorage
from model_store.manifest import OutputKind
from serving.backends.base import InvalidInputError
from serving.gateway.shared_feedback import AttributionSigner, FeedbackLedger, ServedRequest, SharedArms


def test_a_token_vouches_for_its_request_only_and_cannot_be_forged() -> None:
    served = ServedRequest("m", "triton-v2", 3.0, OutputKind.CLASSIFICATION, 10)
    token = AttributionSigner("admin-token").token("req-1", served)
    assert AttributionSigner("admin-token").read(token, "req-1", "m") == served  # another replica
    with pytest.raises(InvalidInputError, match="another request"):
        AttributionSigner("admin-token").read(token, "req-2", "m")
    with pytest.raises(InvalidInputError, match="not one this platform issued"):
        AttributionSigner("another-platform").read(token, "req-1", "m")
    body, _, mac = token.partition(".")
    with pytest.raises(InvalidInputError, match="not one this platform issued"):
        AttributionSigner("admin-token").read(f"{body[:-2]}xx.{mac}", "req-1", "m")
    with pytest.raises(InvalidInputError):
        AttributionSigner("admin-token").read("garbage", "req-1", "m")


def test_one_reward_per_request_and_a_released_claim_counts_again(tmp_path: Path) -> None:
    ledger = FeedbackLedger(FileStorage(tmp_path))
    assert ledger.claim("m", "id/with:odd chars", "a", 1.0)
    assert not FeedbackLedger(FileStorage(tmp_path)).claim("m", "id/with:odd chars", "a", 1.0)
    ledger.release("m", "id/with:odd chars")
    assert ledger.claim("m", "id/with:odd chars", "a", 0.0)


def test_concurrent_rewards_from_many_replicas_are_all_counted(tmp_path: Path) -> None:
    """Eight writers racing on one model's arms: every lost race is re-read and re-applied."""
    storage = FileStorage(tmp_path)

    def replica(variant: str) -> None:
        arms = SharedArms(storage)
        for _ in range(25):
            arms.add("m", variant, 1.0 if variant == "good" else 0.0)

    threads = [threading.Thread(target=replica, args=("good" if i % 2 else "bad",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    arms, etag = SharedArms(storage).read("m")
    assert arms == {"good": (100.0, 0.0), "bad": (0.0, 100.0)} and etag is not None
