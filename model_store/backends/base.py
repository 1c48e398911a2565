"""The object-storage interface the model store is written against.

It is the subset of S3 semantics the store needs, including the two conditional writes that make
publishing and alias/routing updates race-free: create-if-absent and replace-if-unchanged (ETag).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from flywheel.settings import FlywheelSettings


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes together with the ETag that a later compare-and-swap must present."""

    data: bytes
    etag: str


@runtime_checkable
class ObjectStorage(Protocol):
    """Keys are '/'-separated strings relative to the storage root."""

    uri: str

    def get(self, key: str) -> StoredObject:
        """Bytes and ETag of ``key``; raises ObjectNotFoundError."""
        ...

    def etag(self, key: str) -> str | None:
        """ETag of ``key``, or None when it does not exist."""
        ...

    def put(self, key: str, data: bytes) -> str:
        """Write unconditionally and atomically; returns the new ETag."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Create ``key`` only if it does not exist; raises PreconditionFailedError otherwise."""
        ...

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Replace ``key`` only if its ETag is still ``etag``; raises PreconditionFailedError otherwise."""
        ...

    def put_file(self, key: str, source: Path) -> str:
        """Upload a local file (streamed) unconditionally; returns the new ETag."""
        ...

    def get_file(self, key: str, destination: Path) -> None:
        """Download ``key`` to ``destination`` atomically (no partial file on failure)."""
        ...

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every key starting with ``prefix``, recursively, in no guaranteed order."""
        ...

    def list_children(self, prefix: str) -> list[str]:
        """Names one level below ``prefix`` (which ends with '/'): sub-folders and objects."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...


def open_storage(uri: str, settings: FlywheelSettings | None = None) -> ObjectStorage:
    """Build the backend a ``file://PATH`` or ``s3://BUCKET[/PREFIX]`` URI names."""
    if uri.startswith("file://"):
        from model_store.backends.file import FileStorage

        return FileStorage(Path(uri.removeprefix("file://")))
    if uri.startswith("s3://"):
        from flywheel.settings import FlywheelSettings
        from model_store.backends.s3 import S3Storage, s3_client

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return S3Storage(s3_client(settings or FlywheelSettings()), bucket, prefix)
    raise ValueError(f"unsupported store URI {uri!r}: use file://PATH or s3://BUCKET[/PREFIX]")
