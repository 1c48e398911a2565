"""One controller per rollout: a lease taken and renewed by conditional writes in the store.

``leases/<model>.json`` holds ``{holder, expires_at}``. Taking it is create-if-absent, or
replace-if-unchanged (ETag) when it expired or is already ours; a lost race means someone else
holds it. A controller that dies simply stops renewing, and another takes over after the TTL.
"""

from __future__ import annotations

import json
import time

from model_store.backends.base import ObjectStorage
from model_store.errors import ObjectNotFoundError, PreconditionFailedError
from model_store.names import validate_name


class Lease:
    def __init__(self, storage: ObjectStorage, holder: str, ttl_s: float = 15.0) -> None:
        self.storage = storage
        self.holder = holder
        self.ttl_s = ttl_s

    @staticmethod
    def key(model: str) -> str:
        return f"leases/{validate_name(model)}.json"

    def holder_of(self, model: str) -> str | None:
        try:
            document = json.loads(self.storage.get(self.key(model)).data)
        except ObjectNotFoundError:
            return None
        return str(document["holder"]) if document["expires_at"] > time.time() else None

    def acquire(self, model: str) -> bool:
        """Take or renew the lease; False while another live holder has it."""
        key = self.key(model)
        body = json.dumps({"holder": self.holder, "expires_at": time.time() + self.ttl_s}).encode()
        try:
            stored = self.storage.get(key)
        except ObjectNotFoundError:
            try:
                self.storage.put_if_absent(key, body)
                return True
            except PreconditionFailedError:
                return False
        current = json.loads(stored.data)
        if current["holder"] != self.holder and current["expires_at"] > time.time():
            return False
        try:
            self.storage.put_if_match(key, body, stored.etag)
            return True
        except PreconditionFailedError:
            return False

    def release(self, model: str) -> None:
        try:
            stored = self.storage.get(self.key(model))
        except ObjectNotFoundError:
            return
        if json.loads(stored.data)["holder"] == self.holder:
            self.storage.delete(self.key(model))
