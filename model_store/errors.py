"""Errors the model store raises. Each carries a message a person can act on."""

from __future__ import annotations


class ModelStoreError(Exception):
    """Base class of every model-store error."""


class InvalidNameError(ModelStoreError, ValueError):
    """A model, alias or path name that is unsafe or malformed."""


class ObjectNotFoundError(ModelStoreError, KeyError):
    """A key that does not exist in the storage backend."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no object at {self.key!r}"


class PreconditionFailedError(ModelStoreError):
    """A conditional write lost its race: the object exists, or changed since it was read."""


class ModelNotFoundError(ModelStoreError, LookupError):
    """A model name with no published version."""


class VersionNotFoundError(ModelStoreError, LookupError):
    """A version that was never published (or whose publish never finished)."""

    def __init__(self, name: str, version: int | str, existing: list[int]) -> None:
        self.name, self.version, self.existing = name, version, existing
        listed = ", ".join(str(v) for v in existing) if existing else "none"
        super().__init__(f"model {name!r} has no version {version}; existing versions: {listed}")


class ChecksumMismatchError(ModelStoreError):
    """An artifact whose bytes do not match the sha256 recorded in its manifest."""

    def __init__(self, name: str, version: int, path: str, expected: str, actual: str) -> None:
        self.path = path
        super().__init__(
            f"artifact {path!r} of {name}:{version} failed verification: "
            f"sha256 {actual} does not match the manifest's {expected}; refusing it"
        )


class AliasConflictError(ModelStoreError):
    """An alias compare-and-swap whose expected value no longer holds (not retried: the caller decides)."""
