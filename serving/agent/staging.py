"""Staged deploys: "load this version on every replica of that kind" before a spec routes to it.

A deploy writes ``staging/<model>/<backend>-v<version>-<nonce>.json``, waits until every agent of
the kind reports the version ready, writes the routing spec, then deletes its stage. A stage carries
an expiry, so a deploy that died half way pins nothing for longer than that.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from model_store.backends.base import ObjectStorage
from model_store.errors import ModelStoreError

log = logging.getLogger(__name__)
PREFIX = "staging/"


class StagedVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    version: int
    backend: str
    actor: str = ""
    expires_at: datetime

    @property
    def expired(self) -> bool:
        return datetime.now(UTC) >= self.expires_at


def stage(
    storage: ObjectStorage, model: str, version: int, backend: str, ttl_s: float, actor: str = ""
) -> str:
    """Write one deploy's stage; returns its key, the only thing :func:`unstage` removes.

    Each call gets its own object (a random suffix): two deploys of one version never remove
    each other's stage.
    """
    staged = StagedVersion(
        model=model,
        version=version,
        backend=backend,
        actor=actor,
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl_s),
    )
    key = f"{PREFIX}{model}/{backend}-v{version}-{secrets.token_hex(6)}.json"
    storage.put_if_absent(key, staged.model_dump_json().encode())
    return key


def unstage(storage: ObjectStorage, key: str) -> None:
    storage.delete(key)


def staged_versions(storage: ObjectStorage) -> list[StagedVersion]:
    """The unexpired stages; an unreadable one is skipped with a warning, never fatal."""
    found = []
    for key in storage.list_keys(PREFIX):
        if not key.endswith(".json"):
            continue
        try:
            staged = StagedVersion.model_validate_json(storage.get(key).data)
        except (ModelStoreError, ValueError) as error:
            log.warning("skipping unreadable stage %s: %s", key, error)
            continue
        if not staged.expired:
            found.append(staged)
    return found
