"""JSON documents updated by compare-and-swap: aliases today, routing specs and leases later.

``update`` is an optimistic read-modify-write: read the document and its ETag, apply a pure
``mutate`` function, write back on the condition that the ETag is unchanged (or, for a new
document, that it still does not exist). A lost race re-reads and re-applies, so concurrent
writers never overwrite each other. ``mutate`` may raise to refuse a change; nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from model_store.backends.base import ObjectStorage
from model_store.errors import ObjectNotFoundError, PreconditionFailedError


class JsonDocument:
    """One JSON object at ``key`` in ``storage``."""

    def __init__(self, storage: ObjectStorage, key: str, max_attempts: int = 50) -> None:
        self.storage = storage
        self.key = key
        self.max_attempts = max_attempts

    def read_with_etag(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            stored = self.storage.get(self.key)
        except ObjectNotFoundError:
            return None, None
        return json.loads(stored.data), stored.etag

    def read(self) -> dict[str, Any] | None:
        return self.read_with_etag()[0]

    def write(self, document: dict[str, Any], expected_etag: str | None) -> str:
        """One conditional write: create when ``expected_etag`` is None, else replace if unchanged."""
        data = json.dumps(document, indent=2, sort_keys=True).encode()
        if expected_etag is None:
            return self.storage.put_if_absent(self.key, data)
        return self.storage.put_if_match(self.key, data, expected_etag)

    def update(self, mutate: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
        """Apply ``mutate`` atomically, retrying with jittered backoff when another writer wins."""
        for attempt in Retrying(
            retry=retry_if_exception_type(PreconditionFailedError),
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_random_exponential(multiplier=0.01, max=0.5),
            reraise=True,
        ):
            with attempt:
                current, etag = self.read_with_etag()
                updated = mutate(json.loads(json.dumps(current)) if current is not None else None)
                self.write(updated, etag)
        return updated
