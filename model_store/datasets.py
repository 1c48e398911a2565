"""Dataset snapshots in the store: ``datasets/<name>/<snapshot>/``.

A snapshot is the set of raw objects one ingest took, copied into the store with their hashes,
plus a manifest written last (create-if-absent), exactly like a model version: a snapshot exists
iff its manifest does. Snapshot ids derive from the source objects' keys and ETags, so a retried
ingest of the same objects lands on the same id and does nothing twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from model_store.backends.base import ObjectStorage
from model_store.errors import ObjectNotFoundError, PreconditionFailedError
from model_store.names import validate_name

DATASETS_PREFIX = "datasets/"
SNAPSHOT_MANIFEST = "manifest.json"


class SourceObject(BaseModel):
    """One raw object as it was when ingested."""

    bucket: str
    key: str
    etag: str
    size: int
    sha256: str
    stored_as: str = Field(description="Path of the copy, relative to the snapshot folder.")


class SnapshotManifest(BaseModel):
    dataset: str
    snapshot_id: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source_uri: str
    objects: list[SourceObject]
    content_hash: str = Field(description="sha256 over the sorted (key, sha256) of every object.")
    parent: str | None = Field(default=None, description="The previous snapshot of this dataset.")


class DatasetStore:
    """Snapshots of named datasets on the same storage as the model store."""

    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage

    @staticmethod
    def snapshot_prefix(dataset: str, snapshot_id: str) -> str:
        dataset, snapshot_id = (
            validate_name(dataset, "dataset name"),
            validate_name(snapshot_id, "snapshot id"),
        )
        return f"{DATASETS_PREFIX}{dataset}/{snapshot_id}/"

    def list_snapshots(self, dataset: str) -> list[SnapshotManifest]:
        """Complete snapshots, oldest first."""
        manifests = []
        for child in self.storage.list_children(
            f"{DATASETS_PREFIX}{validate_name(dataset, 'dataset name')}/"
        ):
            try:
                stored = self.storage.get(self.snapshot_prefix(dataset, child) + SNAPSHOT_MANIFEST)
            except ObjectNotFoundError:
                continue  # an ingest that never finished
            manifests.append(SnapshotManifest.model_validate_json(stored.data))
        return sorted(manifests, key=lambda manifest: (manifest.created_at, manifest.snapshot_id))

    def get(self, dataset: str, snapshot_id: str) -> SnapshotManifest:
        try:
            stored = self.storage.get(self.snapshot_prefix(dataset, snapshot_id) + SNAPSHOT_MANIFEST)
        except ObjectNotFoundError:
            known = ", ".join(s.snapshot_id for s in self.list_snapshots(dataset)) or "none"
            raise LookupError(
                f"dataset {dataset!r} has no snapshot {snapshot_id!r}; snapshots: {known}"
            ) from None
        return SnapshotManifest.model_validate_json(stored.data)

    def latest(self, dataset: str) -> SnapshotManifest:
        snapshots = self.list_snapshots(dataset)
        if not snapshots:
            raise LookupError(
                f"dataset {dataset!r} has no snapshot yet; run `flywheel pipeline ingest` first"
            )
        return snapshots[-1]

    def commit(self, manifest: SnapshotManifest) -> SnapshotManifest:
        """Write the manifest last; if an identical snapshot already exists, return that one."""
        key = self.snapshot_prefix(manifest.dataset, manifest.snapshot_id) + SNAPSHOT_MANIFEST
        try:
            self.storage.put_if_absent(key, manifest.model_dump_json(indent=2).encode())
        except PreconditionFailedError:
            return self.get(manifest.dataset, manifest.snapshot_id)
        return manifest
