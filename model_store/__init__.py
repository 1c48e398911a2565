"""Flywheel's versioned model store: artifacts, manifests, lineage and aliases on file:// or s3://."""

from model_store.errors import (
    AliasConflictError,
    ChecksumMismatchError,
    InvalidNameError,
    ModelNotFoundError,
    ModelStoreError,
    PreconditionFailedError,
    VersionNotFoundError,
)
from model_store.manifest import Manifest
from model_store.store import ModelStore, artifacts_from_directory

__all__ = [
    "AliasConflictError",
    "ChecksumMismatchError",
    "InvalidNameError",
    "Manifest",
    "ModelNotFoundError",
    "ModelStore",
    "ModelStoreError",
    "PreconditionFailedError",
    "VersionNotFoundError",
    "artifacts_from_directory",
]
