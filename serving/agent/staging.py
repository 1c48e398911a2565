"""Staged deploys: "load this version on every replica of that kind" before a spec routes to it.

A deploy writes ``staging/<model>/<backend>-v<version>.json``, waits until every agent of the
kind reports the version ready, writes the routing spec, then deletes the stage. A stage carries
an expiry, so a deploy that died half way pins nothing for longer than that.
"""

from __future__ import annotations

import logging
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


def stage_key(model: str, version: int, backend: str) -> str:
    return f"{PREFIX}{model}/{backend}-v{version}.json"


def stage(
    storage: ObjectStorage, model: str, version: int, backend: str, ttl_s: float, actor: str = ""
) -> StagedVersion:
    staged = StagedVersion(
        model=model,
        version=version,
        backend=backend,
        actor=actor,
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl_s),
    )
    storage.put(stage_key(model, version, backend), staged.model_dump_json().encode())
    return staged


def unstage(storage: ObjectStorage, model: str, version: int, backend: str) -> None:
    storage.delete(stage_key(model, version, backend))


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
